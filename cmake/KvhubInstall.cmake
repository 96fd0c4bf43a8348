# `cmake --install build [--prefix P]` (or `make install PREFIX=P`): what a serving engine
# or an operator needs from kvhub outside this tree (docs/client.md, "Using kvhub from
# your own build"):
#   bin/                      kvhubd and the tools (kvhub, kvhub-bench, kvhub-codec,
#                             kvhub-replay, kvhub-stress; the bench, replay and stress
#                             tools spawn the kvhubd beside them)
#   include/kvhub/            the client, codec, common and transport headers and the
#                             generated kvhub/v1 protobuf headers, under the paths the
#                             sources use ("client/client.h")
#   lib/                      the static libraries behind them
#   lib/cmake/kvhub/          find_package(kvhub): kvhub::client, kvhub::codec (and the
#                             kvhub::common, kvhub::proto, kvhub::transport they use)
#   lib/python3.X/dist-packages/kvhub
#                             the Python package, for Debian's /usr/bin/python3
# Checked end to end by tests/install_test.py (install, build a program against it with
# find_package, run it against the installed kvhubd, import the installed package).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(KVHUB_INSTALL_INCLUDEDIR ${CMAKE_INSTALL_INCLUDEDIR}/kvhub)
set(KVHUB_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/kvhub)

# Exported libraries and the names consumers use (kvhub::client, ...).
set(KVHUB_EXPORTED_LIBS kvhub_proto kvhub_common kvhub_codec kvhub_client)
set(KVHUB_WITH_UCX OFF)
if(TARGET kvhub_transport)
  list(APPEND KVHUB_EXPORTED_LIBS kvhub_transport)
  set(KVHUB_WITH_UCX ON)
endif()
foreach(lib ${KVHUB_EXPORTED_LIBS})
  string(REGEX REPLACE "^kvhub_" "" export_name ${lib})
  set_target_properties(${lib} PROPERTIES EXPORT_NAME ${export_name})
  target_include_directories(${lib} INTERFACE $<INSTALL_INTERFACE:${KVHUB_INSTALL_INCLUDEDIR}>)
endforeach()
install(TARGETS ${KVHUB_EXPORTED_LIBS} EXPORT kvhubTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(EXPORT kvhubTargets NAMESPACE kvhub:: DESTINATION ${KVHUB_INSTALL_CMAKEDIR})

# Headers: every header of the exported libraries' directories (their public headers
# include each other by these paths), not tests, fuzz entries or benches.
foreach(dir common codec client)
  install(DIRECTORY ${CMAKE_SOURCE_DIR}/${dir}/ DESTINATION ${KVHUB_INSTALL_INCLUDEDIR}/${dir}
          FILES_MATCHING PATTERN "*.h"
          PATTERN "fuzz" EXCLUDE PATTERN "cuda" EXCLUDE PATTERN "*_test*.h" EXCLUDE)
endforeach()
if(KVHUB_WITH_UCX)
  install(DIRECTORY ${CMAKE_SOURCE_DIR}/transport/ DESTINATION ${KVHUB_INSTALL_INCLUDEDIR}/transport
          FILES_MATCHING PATTERN "*.h" PATTERN "*_test*.h" EXCLUDE)
endif()
install(FILES ${CMAKE_BINARY_DIR}/common/version.h DESTINATION ${KVHUB_INSTALL_INCLUDEDIR}/common)
install(DIRECTORY ${CMAKE_BINARY_DIR}/proto/kvhub DESTINATION ${KVHUB_INSTALL_INCLUDEDIR}
        FILES_MATCHING PATTERN "*.pb.h")
install(FILES ${CMAKE_SOURCE_DIR}/proto/kvhub/v1/kvhub.proto
        DESTINATION ${CMAKE_INSTALL_DATADIR}/kvhub/proto/kvhub/v1)

if(KVHUB_WITH_UCX)
  set(KVHUB_CONFIG_UCX_PC "UCX:ucx")
  set(KVHUB_CONFIG_UCX_NOTE " and ucx")
endif()
configure_package_config_file(${CMAKE_SOURCE_DIR}/cmake/kvhubConfig.cmake.in
  ${CMAKE_BINARY_DIR}/cmake/kvhubConfig.cmake INSTALL_DESTINATION ${KVHUB_INSTALL_CMAKEDIR})
write_basic_package_version_file(${CMAKE_BINARY_DIR}/cmake/kvhubConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)  # 0.x: a new minor version may change the API
install(FILES ${CMAKE_BINARY_DIR}/cmake/kvhubConfig.cmake ${CMAKE_BINARY_DIR}/cmake/kvhubConfigVersion.cmake
        DESTINATION ${KVHUB_INSTALL_CMAKEDIR})

# Binaries.
foreach(bin kvhubd kvhub kvhub-bench kvhub-codec kvhub-replay kvhub-stress)
  if(TARGET ${bin})
    install(TARGETS ${bin} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
  endif()
endforeach()

# The Python package, where Debian's interpreter looks (/usr/local/lib/python3.11/dist-packages
# for the default prefix).
if(TARGET kvhub_native)
  execute_process(COMMAND ${KVHUB_PYTHON} -c
    "import sys; print(f'python{sys.version_info[0]}.{sys.version_info[1]}')"
    OUTPUT_VARIABLE KVHUB_PYTHON_VERSION_DIR OUTPUT_STRIP_TRAILING_WHITESPACE COMMAND_ERROR_IS_FATAL ANY)
  set(KVHUB_PYTHON_INSTALL_DIR lib/${KVHUB_PYTHON_VERSION_DIR}/dist-packages
      CACHE STRING "Where `cmake --install` puts the kvhub Python package (relative: under the prefix)")
  install(TARGETS kvhub_native LIBRARY DESTINATION ${KVHUB_PYTHON_INSTALL_DIR}/kvhub)
  install(DIRECTORY ${CMAKE_BINARY_DIR}/python/kvhub/ DESTINATION ${KVHUB_PYTHON_INSTALL_DIR}/kvhub
          FILES_MATCHING PATTERN "*.py" PATTERN "__pycache__" EXCLUDE)
endif()
