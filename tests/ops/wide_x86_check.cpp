// Compiled into sa2va_wide_x86_tests alone (its name is not *_test.cpp): that program runs what it is
// for, the AVX-512 level and AMX tiles emulated, and not the library's native kernels.
#include <gtest/gtest.h>

#include <vector>

#include "ops/cpu/simd.h"
#include "ops_test_util.h"

namespace sa2va {
namespace {

TEST(OpsSimdKernels, EmulatedBuildRunsAvx512AndAmx) {
  EXPECT_TRUE(ops::simd::wide_x86_emulated());
  EXPECT_EQ(ops::simd::isa(), ops::simd::Isa::Avx512);
  EXPECT_TRUE(ops::simd::amx());
  EXPECT_EQ(ops_test::isa_levels(), std::vector<ops::simd::Isa>{ops::simd::Isa::Avx512});
}

}  // namespace
}  // namespace sa2va
