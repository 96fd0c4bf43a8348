#include "client/channel_faults.h"

#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace kvhub {
namespace {

absl::Mutex& FaultsMu() {
  static absl::Mutex* mu = new absl::Mutex();
  return *mu;
}
ChannelInterceptorMaker& Maker() ABSL_EXCLUSIVE_LOCKS_REQUIRED(FaultsMu()) {
  static ChannelInterceptorMaker* m = new ChannelInterceptorMaker();
  return *m;
}

}  // namespace

void SetChannelFaultsForTesting(ChannelInterceptorMaker make) {
  absl::MutexLock lock(&FaultsMu());
  Maker() = std::move(make);
}

std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface> ChannelFaultInterceptor() {
  absl::MutexLock lock(&FaultsMu());
  return Maker() ? Maker()() : nullptr;
}

}  // namespace kvhub
