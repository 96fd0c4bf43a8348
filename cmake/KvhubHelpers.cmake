# Compiler flags and small helpers shared by every directory.
set(KVHUB_WARNINGS -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers)
if(KVHUB_WERROR)
  list(APPEND KVHUB_WARNINGS -Werror)
endif()
if(CMAKE_CXX_COMPILER_ID MATCHES "Clang")
  # Checks every ABSL_GUARDED_BY / ABSL_EXCLUSIVE_LOCKS_REQUIRED annotation.
  list(APPEND KVHUB_WARNINGS -Wthread-safety)
endif()

if(KVHUB_SANITIZE STREQUAL "asan")
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
  # An uninstrumented interpreter that loads our instrumented Python module must
  # preload these (python/CMakeLists.txt, tests/CMakeLists.txt).
  execute_process(COMMAND ${CMAKE_CXX_COMPILER} -print-file-name=libasan.so
                  OUTPUT_VARIABLE KVHUB_LIBASAN OUTPUT_STRIP_TRAILING_WHITESPACE)
  execute_process(COMMAND ${CMAKE_CXX_COMPILER} -print-file-name=libstdc++.so.6
                  OUTPUT_VARIABLE KVHUB_LIBSTDCXX OUTPUT_STRIP_TRAILING_WHITESPACE)
elseif(KVHUB_SANITIZE STREQUAL "tsan")
  add_compile_options(-fsanitize=thread -fno-omit-frame-pointer)
  add_link_options(-fsanitize=thread)
elseif(NOT KVHUB_SANITIZE STREQUAL "")
  message(FATAL_ERROR "KVHUB_SANITIZE must be '', 'asan' or 'tsan'")
endif()

# kvhub_library(NAME SRCS ... DEPS ...): a static library with project warnings.
function(kvhub_library name)
  cmake_parse_arguments(A "" "" "SRCS;DEPS" ${ARGN})
  add_library(${name} STATIC ${A_SRCS})
  target_compile_options(${name} PRIVATE ${KVHUB_WARNINGS})
  target_link_libraries(${name} PUBLIC ${A_DEPS})
endfunction()

# kvhub_binary(NAME SRCS ... DEPS ...): an executable in build/bin.
function(kvhub_binary name)
  cmake_parse_arguments(A "" "" "SRCS;DEPS" ${ARGN})
  add_executable(${name} ${A_SRCS})
  target_compile_options(${name} PRIVATE ${KVHUB_WARNINGS})
  target_link_libraries(${name} PRIVATE ${A_DEPS})
endfunction()

# kvhub_test(NAME SRCS ... DEPS ... [LABELS ...] [TIMEOUT s]): a gtest binary registered with ctest.
function(kvhub_test name)
  cmake_parse_arguments(A "" "TIMEOUT" "SRCS;DEPS;LABELS" ${ARGN})
  add_executable(${name} ${A_SRCS})
  target_compile_options(${name} PRIVATE ${KVHUB_WARNINGS})
  target_link_libraries(${name} PRIVATE ${A_DEPS} GTest::gtest GTest::gmock GTest::gtest_main)
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  add_test(NAME ${name} COMMAND ${name})
  if(NOT A_TIMEOUT)
    set(A_TIMEOUT 300)
  endif()
  set_tests_properties(${name} PROPERTIES TIMEOUT ${A_TIMEOUT}
    ENVIRONMENT "KVHUB_BIN_DIR=${CMAKE_BINARY_DIR}/bin;KVHUB_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
  if(A_LABELS)
    set_tests_properties(${name} PROPERTIES LABELS "${A_LABELS}")
  endif()
endfunction()

# kvhub_fuzzer(NAME SRCS ... ENTRY lib [INSTRUMENT lib ...]): with KVHUB_FUZZ=ON
# (clang), a libFuzzer binary over the fuzz entry library ENTRY; ENTRY and the
# INSTRUMENT libraries (the code under test) get coverage instrumentation.
# Without KVHUB_FUZZ it does nothing (the ctest replays cover the entry points).
function(kvhub_fuzzer name)
  cmake_parse_arguments(F "" "ENTRY" "SRCS;INSTRUMENT" ${ARGN})
  if(NOT KVHUB_FUZZ)
    return()
  endif()
  foreach(t ${F_ENTRY} ${F_INSTRUMENT})
    target_compile_options(${t} PRIVATE -fsanitize=fuzzer-no-link)
  endforeach()
  kvhub_binary(${name} SRCS ${F_SRCS} DEPS ${F_ENTRY})
  target_compile_options(${name} PRIVATE -fsanitize=fuzzer)
  target_link_options(${name} PRIVATE -fsanitize=fuzzer)
endfunction()
