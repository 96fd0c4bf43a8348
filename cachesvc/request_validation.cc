#include "cachesvc/request_validation.h"

#include "absl/strings/str_cat.h"

namespace kvhub::cachesvc {
namespace {

absl::Status Invalid(absl::string_view field, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", why));
}

template <typename Item>
absl::Status ValidatePutItems(const google::protobuf::RepeatedPtrField<Item>& items,
                              uint64_t max_block_bytes, bool inline_data) {
  if (items.empty()) return Invalid("items", "must hold at least 1 item");
  if (static_cast<size_t>(items.size()) > kMaxKeysPerCall) {
    return Invalid("items", absl::StrCat(items.size(), " items, the limit is ", kMaxKeysPerCall));
  }
  uint64_t total = 0;
  for (int i = 0; i < items.size(); ++i) {
    const v1::PutItem& it = items.Get(i);
    if (it.key().size() != kKeyBytes) {
      return Invalid(absl::StrCat("items[", i, "].key"), absl::StrCat(it.key().size(), " bytes, want 16"));
    }
    if (!it.parent().empty() && it.parent().size() != kKeyBytes) {
      return Invalid(absl::StrCat("items[", i, "].parent"),
                     absl::StrCat(it.parent().size(), " bytes, want 0 or 16"));
    }
    if (inline_data) {
      if (it.data().empty()) return Invalid(absl::StrCat("items[", i, "].data"), "is empty");
      if (it.size() != 0 && it.size() != it.data().size()) {
        return Invalid(absl::StrCat("items[", i, "].size"),
                       absl::StrCat(it.size(), " != len(data) ", it.data().size()));
      }
      if (it.data().size() > max_block_bytes) {
        return Invalid(absl::StrCat("items[", i, "].data"),
                       absl::StrCat(it.data().size(), " bytes exceeds the largest block, ", max_block_bytes));
      }
      total += it.data().size();
    } else {
      if (!it.data().empty()) {
        return Invalid(absl::StrCat("items[", i, "].data"), "must be empty in PutStart (send bytes with PutData)");
      }
      if (it.size() == 0) return Invalid(absl::StrCat("items[", i, "].size"), "must be >= 1");
      if (it.size() > max_block_bytes) {
        return Invalid(absl::StrCat("items[", i, "].size"),
                       absl::StrCat(it.size(), " bytes exceeds the largest block, ", max_block_bytes));
      }
    }
  }
  if (inline_data && total > (256ull << 20)) {
    return Invalid("items", absl::StrCat("inline payload of ", total, " bytes exceeds 256MiB"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateNamespaceField(absl::string_view ns) {
  if (ns.empty()) return Invalid("namespace", "is empty (1..256 bytes)");
  if (ns.size() > kMaxNamespaceBytes) {
    return Invalid("namespace", absl::StrCat(ns.size(), " bytes exceeds 256"));
  }
  for (unsigned char c : ns) {
    if (c < 0x20 || c == 0x7f) return Invalid("namespace", "holds a control byte");
  }
  return absl::OkStatus();
}

absl::StatusOr<size_t> ValidatePackedKeys(absl::string_view field, absl::string_view keys) {
  if (keys.empty()) return Invalid(field, "holds no keys (1..4096 keys of 16 bytes)");
  if (keys.size() % kKeyBytes != 0) {
    return Invalid(field, absl::StrCat(keys.size(), " bytes is not a multiple of 16 (packed 16-byte keys)"));
  }
  size_t n = keys.size() / kKeyBytes;
  if (n > kMaxKeysPerCall) return Invalid(field, absl::StrCat(n, " keys, the limit is ", kMaxKeysPerCall));
  return n;
}

absl::Status ValidateLookup(const v1::LookupRequest& req) {
  if (absl::Status s = ValidateNamespaceField(req.namespace_()); !s.ok()) return s;
  if (absl::StatusOr<size_t> n = ValidatePackedKeys("keys", req.keys()); !n.ok()) return n.status();
  if (req.block_tokens() > kMaxBlockTokens) {
    return Invalid("block_tokens", absl::StrCat(req.block_tokens(), " exceeds ", kMaxBlockTokens));
  }
  if (req.model().size() > kMaxModelBytes) {
    return Invalid("model", absl::StrCat(req.model().size(), " bytes exceeds 256"));
  }
  for (unsigned char c : req.model()) {
    if (c < 0x20 || c == 0x7f) return Invalid("model", "holds a control byte");
  }
  return absl::OkStatus();
}

absl::Status ValidatePutStart(const v1::PutStartRequest& req, uint64_t max_block_bytes) {
  if (absl::Status s = ValidateNamespaceField(req.namespace_()); !s.ok()) return s;
  return ValidatePutItems(req.items(), max_block_bytes, /*inline_data=*/false);
}

absl::Status ValidatePut(const v1::PutRequest& req, uint64_t max_block_bytes) {
  if (absl::Status s = ValidateNamespaceField(req.namespace_()); !s.ok()) return s;
  return ValidatePutItems(req.items(), max_block_bytes, /*inline_data=*/true);
}

absl::Status ValidateGet(const v1::GetRequest& req) {
  if (absl::Status s = ValidateNamespaceField(req.namespace_()); !s.ok()) return s;
  if (absl::StatusOr<size_t> n = ValidatePackedKeys("keys", req.keys()); !n.ok()) return n.status();
  if (req.lease_ms() > kMaxLeaseMs) {
    return Invalid("lease_ms", absl::StrCat(req.lease_ms(), " exceeds ", kMaxLeaseMs));
  }
  return absl::OkStatus();
}

absl::Status ValidateDelete(const v1::DeleteRequest& req) {
  if (absl::Status s = ValidateNamespaceField(req.namespace_()); !s.ok()) return s;
  return ValidatePackedKeys("keys", req.keys()).status();
}

absl::Status ValidatePin(const v1::PinRequest& req) {
  if (absl::Status s = ValidateNamespaceField(req.namespace_()); !s.ok()) return s;
  return ValidatePackedKeys("keys", req.keys()).status();
}

absl::Status ValidateIds(absl::string_view field, const google::protobuf::RepeatedField<uint64_t>& ids) {
  if (ids.empty()) return Invalid(field, "holds no ids (1..4096)");
  if (static_cast<size_t>(ids.size()) > kMaxIdsPerCall) {
    return Invalid(field, absl::StrCat(ids.size(), " ids, the limit is ", kMaxIdsPerCall));
  }
  for (int i = 0; i < ids.size(); ++i) {
    if (ids.Get(i) == 0) return Invalid(absl::StrCat(field, "[", i, "]"), "is 0 (never a valid id)");
  }
  return absl::OkStatus();
}

absl::Status ValidatePutDataChunk(const v1::PutDataChunk& chunk) {
  if (chunk.reservation_id() == 0) return Invalid("reservation_id", "is 0 (never a valid id)");
  if (chunk.data().size() > (256ull << 20)) {
    return Invalid("data", "exceeds 256MiB");
  }
  return absl::OkStatus();
}

}  // namespace kvhub::cachesvc
