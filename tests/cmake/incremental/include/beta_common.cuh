#pragma once
#ifndef BETA_FACTOR
#error "kiln_add_kernels(DEFINES) should define BETA_FACTOR"
#endif
__device__ inline float beta_scale(float x) { return x * BETA_FACTOR; }
