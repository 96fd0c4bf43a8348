// Scalar reference kernels: the specification the SIMD and CUDA kernels match.
#include <algorithm>
#include <cmath>

#include "codec/kernels.h"
#include "codec/numeric.h"
#include "codec/kernels_scalar_inl.h"

namespace kvhub::codec {

const Kernels& ScalarKernels() {
  static const Kernels k = {
      "scalar",
      scalar::AbsMaxBits,
      scalar::ColMinMax,
      scalar::GroupMinMax,
      scalar::QuantInt8,
      scalar::DequantInt8,
      scalar::QuantFp8,
      scalar::DequantFp8,
      scalar::QuantAffine,
      scalar::DequantAffine,
      scalar::QuantAffine1,
      scalar::DequantAffine1,
      scalar::KiviStats,
      scalar::HalfToFloatN,
      scalar::Pack4,
      scalar::Unpack4,
      scalar::Pack2,
      scalar::Unpack2,
      scalar::SplitPlanes16,
      scalar::MergePlanes16,
      scalar::AbsMaxCentered,
      scalar::QuantInt8Centered,
      scalar::DequantInt8Centered,
      scalar::QuantFp8Centered,
      scalar::DequantFp8Centered,
  };
  return k;
}

}  // namespace kvhub::codec
