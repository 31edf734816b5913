#include "core/kernels/cpu/linear.h"

#include "core/kernels/cpu/gemm_isa.h"
#include "core/kernels/cpu/gemm_threads.h"

namespace moemesh::kernels {

using checkpoint::WeightMatrix;

void LinearStrided(const float* x, int64_t x_stride, int64_t rows, const WeightMatrix& weight,
                   float* y, int64_t y_stride) {
  if (rows <= 0) return;
  internal::NtTask task;
  task.x = x;
  task.x_stride = x_stride;
  task.rows = rows;
  task.y = y;
  task.y_stride = y_stride;
  task.out_begin = 0;
  task.out_end = weight.rows;
  internal::WeightOperand& operand = task.w;
  operand.rows = weight.rows;
  operand.cols = weight.cols;
  operand.stride = weight.cols;
  switch (weight.format) {
    case WeightMatrix::Format::kFloat32:
      operand.kind = internal::WeightOperand::Kind::kF32;
      operand.data = weight.values.data();
      break;
    case WeightMatrix::Format::kBFloat16:
      operand.kind = internal::WeightOperand::Kind::kBf16;
      operand.data = weight.bf16.data();
      break;
    case WeightMatrix::Format::kFp8Block:
      operand.kind = internal::WeightOperand::Kind::kFp8;
      operand.data = weight.fp8.data();
      operand.scales = weight.block_scales.data();
      operand.scale_stride = weight.scale_cols();
      operand.block_rows = weight.block_rows;
      operand.block_cols = weight.block_cols;
      break;
  }
  internal::RunNtThreaded(task);
}

void Linear(const float* x, int64_t rows, const WeightMatrix& weight, float* y) {
  LinearStrided(x, weight.cols, rows, weight, y, weight.rows);
}

}  // namespace moemesh::kernels
