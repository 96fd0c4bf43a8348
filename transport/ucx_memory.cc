#include "transport/ucx_memory.h"

#include "common/log.h"

namespace kvhub::transport {

UcxMemory::~UcxMemory() {
  const ucs_status_t st = ucp_mem_unmap(context_, memh_);
  if (st != UCS_OK) KVHUB_LOG(warn, "ucx: ucp_mem_unmap failed: {}", ucs_status_string(st));
}

}  // namespace kvhub::transport
