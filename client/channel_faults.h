#pragma once
// Fault injection on kvhub::Client's gRPC channels, for tests (in the manner of
// RocksDB's fault-injection seams): an interceptor factory installed here is added to
// every channel a Client creates afterwards, so a test can make a call fail, or make
// its reply go missing after the shard acted on it, without a network proxy.
// Production code never installs one.
//
// Thread safety: Set may be called from any thread; channels created while it runs
// get the old or the new maker. Install before creating the clients under test and
// clear (nullptr) when done.

#include <functional>
#include <memory>

#include "grpcpp/support/client_interceptor.h"

namespace kvhub {

using ChannelInterceptorMaker =
    std::function<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>()>;

// Installs `make` (nullptr removes it): each new channel gets one factory from it.
void SetChannelFaultsForTesting(ChannelInterceptorMaker make);

// The factory for a new channel, or nullptr when none is installed.
std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface> ChannelFaultInterceptor();

}  // namespace kvhub
