#include "storage/block_store.h"

#include <algorithm>
#include <utility>

#include "common/hash.h"

#include "absl/strings/str_cat.h"
#include "storage/host_block_store.h"
#include "storage/size_classes.h"

namespace kvhub::storage {

uint64_t BlockStoreConfig::EffectiveSlabBytes() const {
  return slab_bytes != 0 ? slab_bytes : AutoSlabBytes(capacity_bytes, region_bytes, max_block_bytes);
}

uint64_t BlockStoreConfig::EffectiveMaxBlocks() const {
  uint64_t slots = max_blocks;
  if (slots == 0 && min_block_bytes != 0) slots = std::min<uint64_t>(capacity_bytes / min_block_bytes, 1u << 22);
  return std::clamp<uint64_t>(slots, 1, 1u << 24);
}

absl::Status BlockStoreConfig::Validate() const {
  auto bad = [](auto&&... parts) { return absl::InvalidArgumentError(absl::StrCat(parts...)); };
  if (capacity_bytes == 0) return bad("capacity_bytes must be > 0");
  // Far above any host tier, and below the sizes whose arithmetic (the automatic
  // slab size's doubling, chunk counts) would overflow.
  constexpr uint64_t kMaxBytes = uint64_t{1} << 50;
  for (const auto& [name, v] : {std::pair{"capacity_bytes", capacity_bytes}, std::pair{"region_bytes", region_bytes},
                                std::pair{"max_block_bytes", max_block_bytes}, std::pair{"slab_bytes", slab_bytes}}) {
    if (v > kMaxBytes) return bad(name, " (", v, ") exceeds 2^50 bytes (1 PiB)");
  }
  if (region_bytes == 0 || region_bytes % 4096 != 0) {
    return bad("region_bytes must be a positive multiple of 4096, got ", region_bytes);
  }
  if (min_block_bytes < 64) return bad("min_block_bytes must be >= 64, got ", min_block_bytes);
  if (max_block_bytes < min_block_bytes) {
    return bad("max_block_bytes (", max_block_bytes, ") < min_block_bytes (", min_block_bytes, ")");
  }
  if (max_block_bytes > region_bytes) {
    return bad("max_block_bytes (", max_block_bytes, ") exceeds region_bytes (", region_bytes, ")");
  }
  if (max_block_bytes > capacity_bytes) {
    return bad("max_block_bytes (", max_block_bytes, ") exceeds capacity_bytes (", capacity_bytes,
               ")");
  }
  if (slab_bytes != 0 && (region_bytes % slab_bytes != 0 || slab_bytes % 4096 != 0 ||
                          slab_bytes < max_block_bytes)) {
    return bad("slab_bytes (", slab_bytes,
               ") must be a multiple of 4096 dividing region_bytes and >= max_block_bytes");
  }
  if (size_class_steps == 0 || size_class_steps > 64) {
    return bad("size_class_steps must be in [1, 64], got ", size_class_steps);
  }
  if (!(low_watermark > 0 && low_watermark <= high_watermark && high_watermark <= 1.0)) {
    return bad("watermarks need 0 < low (", low_watermark, ") <= high (", high_watermark,
               ") <= 1");
  }
  // What the largest block takes: its chunk, which can be well above max_block_bytes
  // (a 40 MiB block takes a 64 MiB chunk of 64 MiB slabs). Capacity and quotas are
  // charged chunks, so they must hold one.
  absl::StatusOr<SizeClasses> classes =
      SizeClasses::Build(min_block_bytes, max_block_bytes, EffectiveSlabBytes(), size_class_steps);
  if (!classes.ok()) return classes.status();
  // The allocator keeps 12 bytes per chunk a slab of the smallest class would have
  // (next-free link and owner tag), for every slab, at start: with tiny blocks on a
  // large tier that dwarfs the blocks (64-byte classes on 512 GiB: 96 GiB).
  const uint64_t slab = EffectiveSlabBytes();
  const uint64_t slabs = (capacity_bytes + slab - 1) / slab;
  const long double side_tables = 12.0L * slabs * (slab / classes->size(0));
  if (side_tables > std::max<long double>(capacity_bytes / 8.0L, 64.0L * (1 << 20))) {
    return bad("min_block_bytes ", min_block_bytes, " on ", capacity_bytes, " bytes needs ",
               static_cast<uint64_t>(side_tables), " bytes of allocator tables (12 per smallest chunk), more "
               "than an eighth of capacity_bytes: raise min_block_bytes");
  }
  const uint64_t max_chunk = classes->size(classes->ClassFor(max_block_bytes));
  if (max_chunk > capacity_bytes) {
    return bad("a max_block_bytes (", max_block_bytes, ") block takes a ", max_chunk, "-byte chunk of ",
               EffectiveSlabBytes(), "-byte slabs, more than capacity_bytes (", capacity_bytes,
               "): the largest blocks could never be stored; lower max_block_bytes or raise capacity_bytes");
  }
  if (namespace_quota_bytes != 0 && namespace_quota_bytes < max_chunk) {
    return bad("namespace_quota_bytes (", namespace_quota_bytes, ") is below the ", max_chunk,
               "-byte chunk a max_block_bytes (", max_block_bytes,
               ") block takes: a namespace could not store one block of the largest size; 0 turns quotas off");
  }
  for (size_t i = 0; i < namespace_quotas.size(); ++i) {
    const NamespaceQuota& q = namespace_quotas[i];
    if (absl::Status s = ValidateNamespace(q.ns); !s.ok()) {
      return bad("namespace_quotas[", i, "]: ", s.message());
    }
    if (q.bytes != 0 && q.bytes < max_chunk) {
      return bad("namespace_quotas: '", q.ns, "' gets ", q.bytes, " bytes, below the ", max_chunk,
                 "-byte chunk a max_block_bytes (", max_block_bytes,
                 ") block takes: it could not store one block of the largest size; 0 exempts it from quotas");
    }
    for (size_t j = 0; j < i; ++j) {
      if (namespace_quotas[j].ns == q.ns) return bad("namespace_quotas: '", q.ns, "' is listed twice");
    }
  }
  if (reservation_timeout <= absl::ZeroDuration() || reservation_timeout > absl::Hours(1)) {
    return bad("reservation_timeout must be in (0, 1h]");
  }
  if (default_lease <= absl::ZeroDuration() || max_lease < default_lease || max_lease > absl::Hours(24)) {
    // The bound keeps now + lease in int64 nanoseconds (an infinite lease was born expired).
    return bad("leases need 0 < default_lease <= max_lease <= 24h");
  }
  if (!(max_pinned_fraction >= 0 && max_pinned_fraction <= 1)) {
    return bad("max_pinned_fraction must be in [0, 1], got ", max_pinned_fraction);
  }
  if (max_leases == 0 || max_leases > (1u << 24)) return bad("max_leases must be in 1..16M, got ", max_leases);
  if (max_blocks > (1u << 24)) return bad("max_blocks must be <= 16M, got ", max_blocks);
  return eviction.Validate();
}

uint64_t BlockStore::NamespaceTag(absl::string_view ns) { return Xxh3_64(ns.data(), ns.size()); }

absl::StatusOr<std::unique_ptr<BlockStore>> BlockStore::Create(const BlockStoreConfig& config,
                                                               Clock* clock, RegionProvider provider) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  absl::StatusOr<std::unique_ptr<HostBlockStore>> store =
      HostBlockStore::Make(config, clock != nullptr ? clock : Clock::Real(), std::move(provider));
  if (!store.ok()) return store.status();
  return std::unique_ptr<BlockStore>(*std::move(store));
}

}  // namespace kvhub::storage
