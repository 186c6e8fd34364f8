// TF kernels of efl's native transport: EflNativeSend and EflNativeRecv move a tensor between the graph and
// a communicator's native endpoint (transport.cc, through its C API) without entering Python.
//
// Built with TF's flags (its C++ standard and string ABI: C++14 and the pre-C++11 ABI for TF 1.15, C++17 and
// the C++11 ABI for TF 2) and linked to _transport.so, which Python has loaded before this library.
#include <atomic>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

extern "C" {
int64_t efl_nt_step(int64_t handle);
int efl_nt_send_tensor(int64_t handle, const char* name, int64_t step, int sync, const char* dtype, int ndims,
                       const int64_t* dims, const char* data, int64_t size, void (*release)(void*),
                       void* release_arg, char* err, int err_size);
int efl_nt_recv(int64_t handle, const char* name, int64_t step, int sync, double timeout_s, void** frame,
                char* err, int err_size);
void efl_nt_frame_data(void* frame, const char** dtype, int* ndims, const int64_t** dims, const char** raw,
                       int64_t* raw_size);
void efl_nt_frame_free(void* frame);
}

namespace efl_native {
namespace {

using tensorflow::DataType;
using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Status;
using tensorflow::Tensor;
using tensorflow::TensorShape;

// By transport.cc's result codes.
const char* const kErrorClass[] = {"",
                                   "StepMismatchError",
                                   "PeerFailedError",
                                   "PeerClosedError",
                                   "ConnectionLostError",
                                   "RecvTimeoutError",
                                   "ClosedError",
                                   "MessageTooLargeError",
                                   "PeerUnreachableError"};
const int kTooLarge = 7;
const int kErrorSize = 8192;

const char* WireDtype(DataType dtype) {
  switch (dtype) {
    case tensorflow::DT_HALF: return "float16";
    case tensorflow::DT_FLOAT: return "float32";
    case tensorflow::DT_DOUBLE: return "float64";
    case tensorflow::DT_INT32: return "int32";
    case tensorflow::DT_INT64: return "int64";
    case tensorflow::DT_BOOL: return "bool";
    case tensorflow::DT_UINT8: return "uint8";
    default: return nullptr;
  }
}

// Like efl's py_func ops: the message starts with the Python class name; errors that are ValueErrors in
// Python are InvalidArgument, the others Unknown.
Status AsStatus(int code, const char* text) {
  const char* name = code > 0 && code < static_cast<int>(sizeof kErrorClass / sizeof *kErrorClass)
                         ? kErrorClass[code] : "CommunicatorError";
  std::string message = std::string(name) + ": " + text;
  if (code == kTooLarge) return tensorflow::errors::InvalidArgument(message);
  return tensorflow::errors::Unknown(message);
}

class NativeOp : public OpKernel {
 public:
  explicit NativeOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("endpoint", &handle_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("message_name", &name_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("sync", &sync_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("T", &dtype_));
  }

 protected:
  // Sync ops use the communicator's run counter; the others number their own messages.
  int64_t NextStep() { return sync_ ? efl_nt_step(handle_) : sequence_.fetch_add(1); }

  tensorflow::int64 handle_ = 0;
  std::string name_;
  bool sync_ = true;
  DataType dtype_;
  std::atomic<int64_t> sequence_{0};
};

void FreeTensorCopy(void* tensor) { delete static_cast<Tensor*>(tensor); }

class SendOp : public NativeOp {
 public:
  explicit SendOp(OpKernelConstruction* ctx) : NativeOp(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& value = ctx->input(0);
    std::vector<int64_t> dims;
    for (int i = 0; i < value.dims(); ++i) dims.push_back(value.dim_size(i));
    auto data = value.tensor_data();
    char err[kErrorSize];
    // gRPC reads the tensor's own buffer, which this reference keeps alive until it is done.
    int code = efl_nt_send_tensor(handle_, name_.c_str(), NextStep(), sync_, WireDtype(dtype_),
                                  static_cast<int>(dims.size()), dims.data(), data.data(), data.size(),
                                  FreeTensorCopy, new Tensor(value), err, kErrorSize);
    OP_REQUIRES(ctx, code == 0, AsStatus(code, err));
  }
};

class RecvOp : public NativeOp {
 public:
  explicit RecvOp(OpKernelConstruction* ctx) : NativeOp(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("timeout_s", &timeout_s_));
  }

  void Compute(OpKernelContext* ctx) override {
    int64_t step = NextStep();
    void* frame = nullptr;
    char err[kErrorSize];
    int code = efl_nt_recv(handle_, name_.c_str(), step, sync_, timeout_s_, &frame, err, kErrorSize);
    OP_REQUIRES(ctx, code == 0, AsStatus(code, err));
    Fill(ctx, step, frame);
    efl_nt_frame_free(frame);
  }

 private:
  void Fill(OpKernelContext* ctx, int64_t step, void* frame) {
    const char* dtype;
    const char* raw;
    const int64_t* dims;
    int ndims;
    int64_t raw_size;
    efl_nt_frame_data(frame, &dtype, &ndims, &dims, &raw, &raw_size);
    const char* expected = WireDtype(dtype_);
    OP_REQUIRES(ctx, strcmp(dtype, expected) == 0,
                tensorflow::errors::InvalidArgument(
                    "TypeError: recv('", name_, "') at step ", step, " expects ", expected, " but the peer sent ",
                    dtype, "; use the same dtype on both sides"));
    TensorShape shape;
    for (int i = 0; i < ndims; ++i) shape.AddDim(dims[i]);
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, shape, &out));
    auto dst = out->tensor_data();
    OP_REQUIRES(ctx, static_cast<int64_t>(dst.size()) == raw_size,
                tensorflow::errors::DataLoss("CommunicatorError: corrupt frame '", name_, "': shape ",
                                             shape.DebugString(), " of ", dtype, " needs ", dst.size(),
                                             " bytes, frame has ", raw_size));
    if (raw_size > 0) memcpy(const_cast<char*>(dst.data()), raw, raw_size);
  }

  float timeout_s_ = 600;
};

#define EFL_NATIVE_TYPES "{half, float, double, int32, int64, bool, uint8}"

REGISTER_OP("EflNativeSend")
    .Input("tensor: T")
    .Attr("T: " EFL_NATIVE_TYPES)
    .Attr("endpoint: int")
    .Attr("message_name: string")
    .Attr("sync: bool = true")
    .SetIsStateful()
    .SetShapeFn(tensorflow::shape_inference::NoOutputs);

REGISTER_OP("EflNativeRecv")
    .Output("tensor: T")
    .Attr("T: " EFL_NATIVE_TYPES)
    .Attr("endpoint: int")
    .Attr("message_name: string")
    .Attr("sync: bool = true")
    .Attr("timeout_s: float = 600")
    .SetIsStateful()
    .SetShapeFn(tensorflow::shape_inference::UnknownShape);

REGISTER_KERNEL_BUILDER(Name("EflNativeSend").Device(tensorflow::DEVICE_CPU), SendOp);
REGISTER_KERNEL_BUILDER(Name("EflNativeRecv").Device(tensorflow::DEVICE_CPU), RecvOp);

}  // namespace
}  // namespace efl_native
