// efl's native transport: a Communicator's PeerService (protos/efl/communicator.proto) on gRPC's C core. Its C
// API serves Python (ctypes) and the TF kernels of ops.cc.
//
// The endpoint's server is the party's only server: it serves Hello, whose request it hands to Python
// (efl_nt_next_hello / efl_nt_answer_hello: the handshake's rules live in Python), and Stream, whose frames it
// files in stream order: DATA into the mailbox, BYE or ERROR as the peer's end. A stream that ends without them
// means the connection was lost. Its client stream carries every frame of this party, in order, ending with
// BYE or ERROR (efl_nt_finish). Being the same service, it talks to the Python transport as well.
//
// This library does not use TF, and Python loads it with RTLD_DEEPBIND: TF's framework library exports
// BoringSSL's symbols, and gRPC's calls into OpenSSL must not bind to them.
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include <atomic>
#include <cstdarg>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>


namespace efl_native {

using Clock = std::chrono::steady_clock;

// Result codes of the C API; Python maps them to efl's exception classes (efl/native/__init__.py), the
// kernels to TF errors (ops.cc).
enum Code {
  kOk = 0,
  kStepMismatch = 1,
  kPeerFailed = 2,
  kPeerClosed = 3,
  kLost = 4,
  kTimeout = 5,
  kClosed = 6,
  kTooLarge = 7,
  kUnreachable = 8,
};

// How the peer's stream ended (peer_end_).
enum PeerEnd { kNoEnd = 0, kPeerBye = 1, kPeerError = 2 };

std::string Quote(const std::string& s) { return "'" + s + "'"; }

std::string Format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string Format(const char* fmt, ...) {
  char buf[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return buf;
}

// ------------------------------------------------------------------------------ protobuf wire of efl.Frame

void PutVarint(std::string* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>(v | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

void PutBytesField(std::string* out, int number, const std::string& value) {
  PutVarint(out, (number << 3) | 2);
  PutVarint(out, value.size());
  out->append(value);
}

bool GetVarint(const uint8_t** p, const uint8_t* end, uint64_t* v) {
  uint64_t result = 0;
  for (int shift = 0; shift < 64 && *p < end; shift += 7) {
    uint8_t byte = *(*p)++;
    result |= static_cast<uint64_t>(byte & 0x7f) << shift;
    if (!(byte & 0x80)) {
      *v = result;
      return true;
    }
  }
  return false;
}

// Field numbers of efl.Frame.
enum { kName = 1, kStep = 2, kSync = 3, kKind = 4, kDtype = 5, kShape = 6, kRaw = 7, kText = 8, kPhase = 9 };
enum { kData = 0, kBye = 1, kError = 2 };

// A received frame. It holds a reference to the message's bytes; `raw` points into them.
struct Frame {
  int kind = kData;
  std::string name, dtype, phase, text;
  int64_t step = 0;
  bool sync = false;
  std::vector<int64_t> shape;
  const char* raw = nullptr;
  size_t raw_size = 0;
  const char* record = nullptr;  // The serialized Frame, for Python.
  size_t record_size = 0;
  grpc_slice slice;

  explicit Frame(grpc_slice s) : slice(grpc_slice_ref(s)) {}
  ~Frame() { grpc_slice_unref(slice); }
  Frame(const Frame&) = delete;
  Frame& operator=(const Frame&) = delete;
};

bool ParseFrame(const uint8_t* p, const uint8_t* end, Frame* f) {
  f->record = reinterpret_cast<const char*>(p);
  f->record_size = end - p;
  while (p < end) {
    uint64_t key, v;
    if (!GetVarint(&p, end, &key)) return false;
    int number = key >> 3, wire = key & 7;
    if (wire == 0) {
      if (!GetVarint(&p, end, &v)) return false;
      if (number == kStep) f->step = static_cast<int64_t>(v);
      if (number == kSync) f->sync = v != 0;
      if (number == kKind) f->kind = static_cast<int>(v);
    } else if (wire == 2) {
      if (!GetVarint(&p, end, &v) || v > static_cast<uint64_t>(end - p)) return false;
      const char* s = reinterpret_cast<const char*>(p);
      switch (number) {
        case kName: f->name.assign(s, v); break;
        case kDtype: f->dtype.assign(s, v); break;
        case kPhase: f->phase.assign(s, v); break;
        case kText: f->text.assign(s, v); break;
        case kRaw: f->raw = s; f->raw_size = v; break;
        case kShape: {
          const uint8_t* q = p;
          const uint8_t* q_end = p + v;
          while (q < q_end) {
            uint64_t dim;
            if (!GetVarint(&q, q_end, &dim)) return false;
            f->shape.push_back(static_cast<int64_t>(dim));
          }
          break;
        }
        default: break;  // A field of a newer protocol version.
      }
      p += v;
    } else if (wire == 1) {
      p += 8;
    } else if (wire == 5) {
      p += 4;
    } else {
      return false;
    }
    if (p > end) return false;
  }
  return true;
}

// The header of a DATA frame: every field but `raw`'s bytes, ending with raw's tag and length.
std::string FrameHeader(const std::string& name, int64_t step, bool sync, const std::string& dtype,
                        const std::vector<int64_t>& shape, const std::string& phase, size_t raw_size) {
  std::string h;
  PutBytesField(&h, kName, name);
  PutVarint(&h, kStep << 3);
  PutVarint(&h, static_cast<uint64_t>(step));
  if (sync) {
    PutVarint(&h, kSync << 3);
    PutVarint(&h, 1);
  }
  PutBytesField(&h, kDtype, dtype);
  if (!shape.empty()) {
    std::string dims;
    for (int64_t d : shape) PutVarint(&dims, static_cast<uint64_t>(d));
    PutBytesField(&h, kShape, dims);
  }
  if (sync && !phase.empty()) PutBytesField(&h, kPhase, phase);
  PutVarint(&h, (kRaw << 3) | 2);
  PutVarint(&h, raw_size);
  return h;
}

// ------------------------------------------------------------------------------------------- endpoint

gpr_timespec Inf() { return gpr_inf_future(GPR_CLOCK_MONOTONIC); }
gpr_timespec In(double seconds) {
  return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                      gpr_time_from_micros(static_cast<int64_t>(seconds * 1e6), GPR_TIMESPAN));
}

struct Config {
  std::string role, peer_role, peer_addr;
  // TLS as on the Python transport: the client uses it when peer_ca is set, the server when my_cert is (and
  // then requires client certificates signed by peer_ca, if set). PEM text; empty means unset.
  std::string peer_ca, my_cert, my_key, target_name_override;
  int64_t send_limit = 0;
  std::string send_limit_variable;
  int64_t recv_limit = 0;
  double scan_s = 1.0;
  // gRPC keepalive, as on the Python transport (settings.keepalive, EFL_PEER_TIMEOUT_S).
  int keepalive_time_ms = 10000;
  int keepalive_timeout_ms = 15000;
};

class Endpoint {
 public:
  explicit Endpoint(const Config& config) : cfg_(config) {}
  ~Endpoint() { Shutdown(); }

  // Starts the server on `addr` (port 0: a free port); returns the port, or 0 with `err` set.
  int Listen(const std::string& addr, std::string* err) {
    std::vector<grpc_arg> args = ChannelArgs(true);
    grpc_channel_args channel_args = {args.size(), args.data()};
    server_ = grpc_server_create(&channel_args, nullptr);
    scq_ = grpc_completion_queue_create_for_next(nullptr);
    grpc_server_register_completion_queue(server_, scq_, nullptr);
    grpc_server_credentials* creds;
    if (!cfg_.my_cert.empty()) {
      grpc_ssl_pem_key_cert_pair pair = {cfg_.my_key.c_str(), cfg_.my_cert.c_str()};
      creds = grpc_ssl_server_credentials_create_ex(
          cfg_.peer_ca.empty() ? nullptr : cfg_.peer_ca.c_str(), &pair, 1,
          cfg_.peer_ca.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                               : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY,
          nullptr);
    } else {
      creds = grpc_insecure_server_credentials_create();
    }
    int port = grpc_server_add_http2_port(server_, addr.c_str(), creds);
    grpc_server_credentials_release(creds);
    if (port <= 0) {
      *err = "the native transport cannot listen on " + addr;
      grpc_server_destroy(server_);
      server_ = nullptr;
      grpc_completion_queue_shutdown(scq_);
      Drain(scq_);
      grpc_completion_queue_destroy(scq_);
      scq_ = nullptr;
      return 0;
    }
    grpc_server_start(server_);
    RequestCall();
    serving_ = std::thread(&Endpoint::Serve, this);
    return port;
  }

  // Opens the outgoing stream to the peer's native server.
  int Connect(const std::string& target, double timeout_s, std::string* err) {
    std::lock_guard<std::mutex> send_lock(send_mu_);
    std::vector<grpc_arg> args = ChannelArgs(false);
    grpc_channel_credentials* creds;
    if (!cfg_.peer_ca.empty()) {
      grpc_ssl_pem_key_cert_pair pair = {cfg_.my_key.c_str(), cfg_.my_cert.c_str()};
      creds = grpc_ssl_credentials_create(cfg_.peer_ca.c_str(), cfg_.my_cert.empty() ? nullptr : &pair, nullptr,
                                          nullptr);
      if (!cfg_.target_name_override.empty()) {
        grpc_arg a;
        a.type = GRPC_ARG_STRING;
        a.key = const_cast<char*>(GRPC_SSL_TARGET_NAME_OVERRIDE_ARG);
        a.value.string = const_cast<char*>(cfg_.target_name_override.c_str());
        args.push_back(a);
      }
    } else {
      creds = grpc_insecure_credentials_create();
    }
    grpc_channel_args channel_args = {args.size(), args.data()};
    channel_ = grpc_channel_create(target.c_str(), creds, &channel_args);
    grpc_channel_credentials_release(creds);
    ccq_ = grpc_completion_queue_create_for_pluck(nullptr);
    grpc_slice method = grpc_slice_from_static_string("/efl.PeerService/Stream");
    call_ = grpc_channel_create_call(channel_, nullptr, GRPC_PROPAGATE_DEFAULTS, ccq_, method, nullptr, Inf(),
                                     nullptr);
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_SEND_INITIAL_METADATA;
    op.flags = GRPC_INITIAL_METADATA_WAIT_FOR_READY;
    bool ok = Start(&op, 1, kMetadataSent) && Pluck(kMetadataSent, timeout_s);
    grpc_metadata_array_init(&reply_md_);
    if (ok) {
      // The server's initial metadata must be received before any message is (else the first receive hangs).
      memset(&op, 0, sizeof op);
      op.op = GRPC_OP_RECV_INITIAL_METADATA;
      op.data.recv_initial_metadata.recv_initial_metadata = &reply_md_;
      ok = Start(&op, 1, kMetadataReceived) && Pluck(kMetadataReceived, timeout_s);
    }
    if (!ok) {
      *err = Format("the %s at %s did not open its stream within %g s; is it still running?",
                    cfg_.peer_role.c_str(), target.c_str(), timeout_s);
      return kUnreachable;
    }
    connected_ = true;
    // The call's status says why the stream failed (a reset connection, a ping that got no answer); a thread
    // waits for it so that a lost connection is reported with that account too.
    grpc_metadata_array_init(&trailing_md_);
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    op.data.recv_status_on_client.trailing_metadata = &trailing_md_;
    op.data.recv_status_on_client.status = &status_;
    op.data.recv_status_on_client.status_details = &status_details_;
    if (Start(&op, 1, kStatus)) {
      watching_ = std::thread(&Endpoint::WatchStatus, this);
    } else {
      grpc_metadata_array_destroy(&trailing_md_);
    }
    return kOk;
  }

  // Waits, at most timeout_s, until the outgoing call's status is known once the connection was lost.
  void WaitDetail(double timeout_s) {
    auto deadline = Clock::now() + std::chrono::microseconds(static_cast<int64_t>(timeout_s * 1e6));
    std::unique_lock<std::mutex> l(mu_);
    while (!status_known_ && !shut_down_ && watching_.joinable()) {
      if (cv_.wait_until(l, deadline) == std::cv_status::timeout) break;
    }
  }

  // Writes one serialized Frames message made of `parts`; takes their references.
  int Send(grpc_slice* parts, size_t n, const std::string& name, int64_t step, std::string* err) {
    size_t size = 0;
    for (size_t i = 0; i < n; ++i) size += GRPC_SLICE_LENGTH(parts[i]);
    grpc_byte_buffer* buffer = nullptr;
    if (static_cast<int64_t>(size) <= send_limit_.load()) buffer = grpc_raw_byte_buffer_create(parts, n);
    for (size_t i = 0; i < n; ++i) grpc_slice_unref(parts[i]);
    if (buffer == nullptr) {
      std::lock_guard<std::mutex> l(mu_);
      *err = Format("message '%s' at step %lld is %zu bytes, over the limit of %lld bytes; raise %s (at most "
                    "2147483647) or send smaller tensors", name.c_str(), static_cast<long long>(step), size,
                    static_cast<long long>(send_limit_.load()), send_limit_variable_.c_str());
      return kTooLarge;
    }
    int code;
    {
      std::lock_guard<std::mutex> send_lock(send_mu_);
      code = Broken(false, err);
      if (code == kOk && (!connected_ || finished_)) {
        *err = "the native transport is not connected; call connect() first";
        code = kClosed;
      }
      if (code == kOk) {
        grpc_op op;
        memset(&op, 0, sizeof op);
        op.op = GRPC_OP_SEND_MESSAGE;
        op.data.send_message.send_message = buffer;
        if (!Start(&op, 1, kMessageSent) || !PluckWhileAlive(kMessageSent)) {
          code = Broken(false, err);
          if (code == kOk) {
            *err = Format("sending '%s' at step %lld to the %s at %s failed: the %s process died or the network "
                          "failed", name.c_str(), static_cast<long long>(step), cfg_.peer_role.c_str(),
                          cfg_.peer_addr.c_str(), cfg_.peer_role.c_str());
            code = kLost;
          }
        }
      }
    }
    grpc_byte_buffer_destroy(buffer);
    return code;
  }

  // Takes the next frame of `name`, which must carry `step`; see Communicator.recv for the rules.
  int Recv(const std::string& name, int64_t step, bool sync, double timeout_s, std::shared_ptr<Frame>* out,
           std::string* err) {
    auto deadline = Clock::now() + std::chrono::microseconds(static_cast<int64_t>(timeout_s * 1e6));
    std::unique_lock<std::mutex> l(mu_);
    std::deque<std::shared_ptr<Frame>>& fifo = mailbox_[name];
    while (fifo.empty()) {
      int code = BrokenLocked(true, err);
      if (code != kOk) return code;
      if (sync && has_peer_step_ && peer_step_ > step) {
        *err = Format("the %s finished step %lld without sending '%s': it already sent messages of step %lld; "
                      "the parties disagree on which runs send '%s'", cfg_.peer_role.c_str(),
                      static_cast<long long>(step), name.c_str(), static_cast<long long>(peer_step_),
                      name.c_str());
        return kStepMismatch;
      }
      if (sync && has_peer_step_ && peer_step_ == step && !PhaseFits(name, step, peer_phase_, err)) {
        return kStepMismatch;
      }
      auto now = Clock::now();
      if (now >= deadline) {
        *err = Format("deadline exceeded: recv of '%s' at step %lld waited %.1f s for the %s at %s; raise "
                      "default_timeout_milliseconds or EFL_RECV_TIMEOUT_S if the %s is just slow",
                      name.c_str(), static_cast<long long>(step), timeout_s, cfg_.peer_role.c_str(),
                      cfg_.peer_addr.c_str(), cfg_.peer_role.c_str());
        return kTimeout;
      }
      auto wake = now + std::chrono::microseconds(static_cast<int64_t>(cfg_.scan_s * 1e6));
      cv_.wait_until(l, std::min(deadline, wake));
    }
    const Frame& head = *fifo.front();
    if (sync && head.step == step && !PhaseFits(name, step, head.phase, err)) return kStepMismatch;
    if (head.step != step || head.sync != sync) {
      *err = Format("recv of '%s' expects step %lld (%s) but the %s's next '%s' message has step %lld (%s)",
                    name.c_str(), static_cast<long long>(step), sync ? "sync" : "unsynced",
                    cfg_.peer_role.c_str(), name.c_str(), static_cast<long long>(head.step),
                    head.sync ? "sync" : "unsynced");
      return kStepMismatch;
    }
    *out = fifo.front();
    fifo.pop_front();
    return kOk;
  }

  // Marks this side closing (waiting receives fail with ClosedError), then writes BYE (`error` empty) or ERROR
  // as the stream's last frame and half-closes it; false if that took longer than timeout_s.
  bool Finish(const std::string& error, double timeout_s) {
    {
      std::lock_guard<std::mutex> l(mu_);
      closing_ = true;
      close_error_ = error;
    }
    cv_.notify_all();
    std::lock_guard<std::mutex> send_lock(send_mu_);
    if (!connected_ || finished_) return true;
    finished_ = true;
    std::string frame;
    PutVarint(&frame, kKind << 3);
    PutVarint(&frame, error.empty() ? kBye : kError);
    if (!error.empty()) PutBytesField(&frame, kText, error);
    std::string message;
    PutBytesField(&message, 1, frame);
    grpc_slice slice = grpc_slice_from_copied_buffer(message.data(), message.size());
    grpc_byte_buffer* buffer = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice);
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_MESSAGE;
    ops[0].data.send_message.send_message = buffer;
    ops[1].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    bool ok = Start(ops, 2, kHalfClosed) && Pluck(kHalfClosed, timeout_s);
    grpc_byte_buffer_destroy(buffer);
    return ok;
  }

  // Waits until the peer's stream ended (BYE, ERROR or loss); false if it did not within timeout_s.
  bool WaitEnd(double timeout_s) {
    auto deadline = Clock::now() + std::chrono::microseconds(static_cast<int64_t>(timeout_s * 1e6));
    std::unique_lock<std::mutex> l(mu_);
    while (peer_end_ == kNoEnd && lost_.empty() && !shut_down_) {
      if (cv_.wait_until(l, deadline) == std::cv_status::timeout) break;
    }
    return peer_end_ != kNoEnd || !lost_.empty();
  }

  // Why nothing more will come from the peer (kPeerFailed, kPeerClosed, kLost), or kOk while all is well.
  int PeerState(std::string* err) {
    std::lock_guard<std::mutex> l(mu_);
    return PeerStateLocked(err);
  }

  // The next Hello request for Python: its id (>0) and bytes; 0 on timeout, -1 once the endpoint shut down.
  int64_t NextHello(double timeout_s, std::string* request) {
    auto deadline = Clock::now() + std::chrono::microseconds(static_cast<int64_t>(timeout_s * 1e6));
    std::unique_lock<std::mutex> l(calls_mu_);
    while (hellos_.empty()) {
      if (hello_stop_) return -1;
      if (hello_cv_.wait_until(l, deadline) == std::cv_status::timeout && hellos_.empty()) {
        return hello_stop_ ? -1 : 0;
      }
    }
    int64_t id = hellos_.front().first;
    *request = std::move(hellos_.front().second);
    hellos_.pop_front();
    return id;
  }

  // Answers Hello `id` with a serialized Greeting, or with INVALID_ARGUMENT when `reply` is null.
  void AnswerHello(int64_t id, const char* reply, size_t size) {
    std::lock_guard<std::mutex> l(calls_mu_);
    auto it = awaiting_.find(id);
    if (it == awaiting_.end()) return;  // The caller gave up meanwhile.
    ServerCall* c = it->second;
    awaiting_.erase(it);
    if (reply == nullptr) {
      SendStatus(c, GRPC_STATUS_INVALID_ARGUMENT, "the request is not a Greeting");
      return;
    }
    grpc_slice slice = grpc_slice_from_copied_buffer(reply, size);
    c->reply = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice);
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_MESSAGE;
    ops[0].data.send_message.send_message = c->reply;
    ops[1].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[1].data.send_status_from_server.status = GRPC_STATUS_OK;
    StartServerBatch(c, ops, 2, kDone);
  }

  void WatchStatus() {
    grpc_completion_queue_pluck(ccq_, Tag(kStatus), Inf(), nullptr);
    {
      std::lock_guard<std::mutex> l(mu_);
      status_known_ = true;
      if (status_ != GRPC_STATUS_OK && !shut_down_ && !finished_) {
        char* details = grpc_slice_to_c_string(status_details_);
        std::string text = Format("the stream to the %s at %s failed (status %d: %s): the %s process died or the "
                                  "network failed", cfg_.peer_role.c_str(), cfg_.peer_addr.c_str(),
                                  static_cast<int>(status_), details, cfg_.peer_role.c_str());
        gpr_free(details);
        if (lost_.empty() && peer_end_ == kNoEnd) {
          lost_ = text;
        } else if (lost_detail_.empty()) {
          lost_detail_ = text;
        }
      }
    }
    cv_.notify_all();
  }

  void Shutdown() {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (shut_down_) return;
      shut_down_ = true;
      closing_ = true;
    }
    cv_.notify_all();
    {
      std::lock_guard<std::mutex> l(calls_mu_);
      hello_stop_ = true;
    }
    hello_cv_.notify_all();
    if (call_ != nullptr) grpc_call_cancel(call_, nullptr);
    if (watching_.joinable()) watching_.join();
    {
      std::lock_guard<std::mutex> send_lock(send_mu_);  // A send in progress sees the cancel and returns.
      if (call_ != nullptr) {
        grpc_call_unref(call_);
        call_ = nullptr;
        grpc_metadata_array_destroy(&reply_md_);
        if (status_known_) grpc_metadata_array_destroy(&trailing_md_);
        grpc_slice_unref(status_details_);
      }
      if (channel_ != nullptr) {
        grpc_channel_destroy(channel_);
        channel_ = nullptr;
      }
      if (ccq_ != nullptr) {
        grpc_completion_queue_shutdown(ccq_);
        grpc_completion_queue_destroy(ccq_);
        ccq_ = nullptr;
      }
    }
    if (server_ != nullptr) {
      grpc_server_shutdown_and_notify(server_, scq_, Tag(kServerDown));
      grpc_server_cancel_all_calls(server_);
      serving_.join();
      grpc_server_destroy(server_);
      server_ = nullptr;
      grpc_completion_queue_destroy(scq_);
      scq_ = nullptr;
    }
  }

  int64_t step() const { return step_.load(); }
  void set_step(int64_t step) { step_.store(step); }
  void set_phase(const std::string& phase) {
    std::lock_guard<std::mutex> l(mu_);
    phase_ = phase;
  }
  std::string phase() {
    std::lock_guard<std::mutex> l(mu_);
    return phase_;
  }
  void set_send_limit(int64_t limit, const std::string& variable) {
    std::lock_guard<std::mutex> l(mu_);
    send_limit_variable_ = variable;
    send_limit_.store(limit);
  }

 private:
  enum TagId { kAccepted = 1, kServerReady, kReceived, kServerClosed, kServerDown, kMetadataSent,
               kMetadataReceived, kMessageSent, kHalfClosed, kStatus };
  static void* Tag(TagId id) { return reinterpret_cast<void*>(static_cast<intptr_t>(id)); }

  static void Drain(grpc_completion_queue* cq) {
    while (grpc_completion_queue_next(cq, Inf(), nullptr).type != GRPC_QUEUE_SHUTDOWN) {
    }
  }

  bool Start(grpc_op* ops, size_t n, TagId tag) {
    return grpc_call_start_batch(call_, ops, n, Tag(tag), nullptr) == GRPC_CALL_OK;
  }

  // Waits for `tag` on the client queue; on timeout cancels the call and still waits for the tag.
  bool Pluck(TagId tag, double timeout_s) {
    grpc_event ev = grpc_completion_queue_pluck(ccq_, Tag(tag), In(timeout_s), nullptr);
    if (ev.type == GRPC_QUEUE_TIMEOUT) {
      grpc_call_cancel(call_, nullptr);
      ev = grpc_completion_queue_pluck(ccq_, Tag(tag), Inf(), nullptr);
      return false;
    }
    return ev.type == GRPC_OP_COMPLETE && ev.success;
  }

  // Waits for `tag` while the connection is alive; a write that the peer never takes is cancelled once the
  // connection is known to be broken or this side closes.
  bool PluckWhileAlive(TagId tag) {
    for (;;) {
      grpc_event ev = grpc_completion_queue_pluck(ccq_, Tag(tag), In(cfg_.scan_s), nullptr);
      if (ev.type != GRPC_QUEUE_TIMEOUT) return ev.type == GRPC_OP_COMPLETE && ev.success;
      std::string ignored;
      if (Broken(false, &ignored) != kOk) grpc_call_cancel(call_, nullptr);
    }
  }

  std::vector<grpc_arg> ChannelArgs(bool server) {
    std::vector<grpc_arg> args;
    auto add = [&args](const char* key, int value) {
      grpc_arg a;
      a.type = GRPC_ARG_INTEGER;
      a.key = const_cast<char*>(key);
      a.value.integer = value;
      args.push_back(a);
    };
    // The same keepalive as the Python transport: a silent peer is found within EFL_PEER_TIMEOUT_S.
    add(GRPC_ARG_KEEPALIVE_TIME_MS, cfg_.keepalive_time_ms);
    add(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, cfg_.keepalive_timeout_ms);
    add(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    add(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
    add(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, static_cast<int>(std::min<int64_t>(cfg_.recv_limit, INT32_MAX)));
    add(GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, -1);  // Send() checks the limit itself, with a clearer error.
    if (server) {
      add(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, std::min(5000, cfg_.keepalive_time_ms));
      add(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
      add(GRPC_ARG_ALLOW_REUSEPORT, 0);
    }
    return args;
  }

  // One RPC the server took. Its batches' tags are `Op`s; it is freed when none is in flight (calls_mu_).
  struct ServerCall {
    enum Kind { kHello, kStream, kOther } kind = kOther;
    grpc_call* call = nullptr;
    grpc_byte_buffer* received = nullptr;
    grpc_byte_buffer* reply = nullptr;
    grpc_slice status_details = grpc_empty_slice();
    int cancelled = 0;
    int in_flight = 0;
    int64_t id = 0;
  };
  enum OpId { kHelloRead = 1, kStreamRead, kCallClosed, kDone };
  struct Op {
    ServerCall* call;
    OpId what;
  };

  void RequestCall() {
    requested_ = true;
    grpc_call_details_init(&details_);
    grpc_metadata_array_init(&request_md_);
    incoming_ = nullptr;
    grpc_server_request_call(server_, &incoming_, &details_, &request_md_, scq_, scq_, Tag(kAccepted));
  }

  // Caller holds calls_mu_.
  bool StartServerBatch(ServerCall* c, grpc_op* ops, size_t n, OpId what) {
    Op* op = new Op{c, what};
    if (grpc_call_start_batch(c->call, ops, n, op, nullptr) != GRPC_CALL_OK) {
      delete op;
      return false;
    }
    ++c->in_flight;
    return true;
  }

  // Caller holds calls_mu_.
  void SendStatus(ServerCall* c, grpc_status_code status, const char* details) {
    grpc_slice_unref(c->status_details);
    c->status_details = grpc_slice_from_copied_string(details);
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    op.data.send_status_from_server.status = status;
    op.data.send_status_from_server.status_details = &c->status_details;
    StartServerBatch(c, &op, 1, kDone);
  }

  // Caller holds calls_mu_.
  void ReceiveNext(ServerCall* c) {
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->received;
    if (!StartServerBatch(c, &op, 1, kStreamRead)) StreamEnded(false);
  }

  void FreeIfIdle(ServerCall* c) {
    if (c->in_flight > 0) return;
    --live_calls_;
    grpc_call_unref(c->call);
    if (c->received != nullptr) grpc_byte_buffer_destroy(c->received);
    if (c->reply != nullptr) grpc_byte_buffer_destroy(c->reply);
    grpc_slice_unref(c->status_details);
    delete c;
  }

  // A new RPC: Hello goes to Python, the first Stream is the peer's, anything else is refused.
  void Accept() {
    auto* c = new ServerCall();
    c->call = incoming_;
    const char* method = reinterpret_cast<const char*>(GRPC_SLICE_START_PTR(details_.method));
    std::string name(method, GRPC_SLICE_LENGTH(details_.method));
    grpc_call_details_destroy(&details_);
    grpc_metadata_array_destroy(&request_md_);
    std::lock_guard<std::mutex> l(calls_mu_);
    ++live_calls_;
    if (!server_down_) RequestCall();
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[0].data.recv_close_on_server.cancelled = &c->cancelled;
    if (name == "/efl.PeerService/Hello") {
      c->kind = ServerCall::kHello;
    } else if (name == "/efl.PeerService/Stream" && !stream_taken_) {
      c->kind = ServerCall::kStream;
      stream_taken_ = true;
    }
    StartServerBatch(c, ops, 1, kCallClosed);
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (c->kind == ServerCall::kHello) {
      ops[1].op = GRPC_OP_RECV_MESSAGE;
      ops[1].data.recv_message.recv_message = &c->received;
      StartServerBatch(c, ops, 2, kHelloRead);
    } else if (c->kind == ServerCall::kStream) {
      StartServerBatch(c, ops, 1, kDone);
      ReceiveNext(c);
    } else {
      StartServerBatch(c, ops, 1, kDone);
      bool stream = name == "/efl.PeerService/Stream";
      SendStatus(c, stream ? GRPC_STATUS_FAILED_PRECONDITION : GRPC_STATUS_UNIMPLEMENTED,
                 stream ? "this party already has a stream from its peer" : "unknown method");
    }
    FreeIfIdle(c);
  }

  // The server's loop: answers RPCs and files the peer's stream.
  void Serve() {
    for (;;) {
      grpc_event ev = grpc_completion_queue_next(scq_, Inf(), nullptr);
      if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
      if (ev.tag == Tag(kAccepted)) {
        {
          std::lock_guard<std::mutex> l(calls_mu_);
          requested_ = false;
        }
        if (ev.success) {
          Accept();
        } else {
          grpc_call_details_destroy(&details_);
          grpc_metadata_array_destroy(&request_md_);
        }
        ShutdownQueueIfIdle();
        continue;
      }
      if (ev.tag == Tag(kServerDown)) {
        {
          std::lock_guard<std::mutex> l(calls_mu_);
          server_down_ = true;
        }
        ShutdownQueueIfIdle();
        continue;
      }
      Op* op = static_cast<Op*>(ev.tag);
      ServerCall* c = op->call;
      OpId what = op->what;
      delete op;
      grpc_byte_buffer* received = nullptr;
      {
        std::lock_guard<std::mutex> l(calls_mu_);
        --c->in_flight;
        received = c->received;
        c->received = nullptr;
        if (what == kHelloRead) {
          if (ev.success && received != nullptr) {
            grpc_byte_buffer_reader reader;
            grpc_byte_buffer_reader_init(&reader, received);
            grpc_slice all = grpc_byte_buffer_reader_readall(&reader);
            grpc_byte_buffer_reader_destroy(&reader);
            c->id = next_hello_id_++;
            hellos_.emplace_back(c->id, std::string(reinterpret_cast<const char*>(GRPC_SLICE_START_PTR(all)),
                                                    GRPC_SLICE_LENGTH(all)));
            grpc_slice_unref(all);
            awaiting_[c->id] = c;
            hello_cv_.notify_all();
          } else {
            SendStatus(c, GRPC_STATUS_INVALID_ARGUMENT, "Hello without a request");
          }
        } else if (what == kCallClosed) {
          if (c->id != 0) awaiting_.erase(c->id);
          if (c->kind == ServerCall::kStream && c->cancelled) StreamEnded(false);
        } else if (what == kStreamRead && (!ev.success || received == nullptr)) {
          StreamEnded(ev.success != 0);
          if (ev.success) SendStatus(c, GRPC_STATUS_OK, "");  // The peer half-closed: end its call cleanly.
        }
      }
      if (what == kStreamRead && ev.success && received != nullptr) {
        File(received);
        std::lock_guard<std::mutex> l(calls_mu_);
        ReceiveNext(c);
      }
      if (received != nullptr) grpc_byte_buffer_destroy(received);
      {
        std::lock_guard<std::mutex> l(calls_mu_);
        FreeIfIdle(c);
      }
      ShutdownQueueIfIdle();
    }
  }

  // The queue may shut down only once the server is down and no call or request can post to it any more.
  void ShutdownQueueIfIdle() {
    std::lock_guard<std::mutex> l(calls_mu_);
    if (server_down_ && live_calls_ == 0 && !requested_ && !queue_down_) {
      queue_down_ = true;
      grpc_completion_queue_shutdown(scq_);
    }
  }

  void StreamEnded(bool cleanly) {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (incoming_ended_) return;
      incoming_ended_ = true;
      if (peer_end_ == kNoEnd && lost_.empty()) {
        lost_ = Format("the stream from the %s at %s %s without BYE or ERROR: the %s process died or the network "
                       "failed", cfg_.peer_role.c_str(), cfg_.peer_addr.c_str(), cleanly ? "ended" : "broke",
                       cfg_.peer_role.c_str());
      }
    }
    cv_.notify_all();
  }

  // Parses one Frames message and files its frames in order: DATA into the mailbox, BYE/ERROR as the end.
  void File(grpc_byte_buffer* buffer) {
    grpc_byte_buffer_reader reader;
    grpc_byte_buffer_reader_init(&reader, buffer);
    grpc_slice all = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    const uint8_t* p = GRPC_SLICE_START_PTR(all);
    const uint8_t* end = p + GRPC_SLICE_LENGTH(all);
    std::vector<std::shared_ptr<Frame>> frames;
    bool ok = true;
    while (ok && p < end) {
      uint64_t key, length;
      ok = GetVarint(&p, end, &key) && (key & 7) == 2 && GetVarint(&p, end, &length) &&
           length <= static_cast<uint64_t>(end - p);
      if (!ok) break;
      if ((key >> 3) == 1) {
        auto frame = std::make_shared<Frame>(all);
        ok = ParseFrame(p, p + length, frame.get());
        if (ok) frames.push_back(frame);
      }
      p += length;
    }
    grpc_slice_unref(all);
    {
      std::lock_guard<std::mutex> l(mu_);
      if (!ok && lost_.empty()) {
        lost_ = Format("corrupt message from the %s on the native stream (%zu bytes)", cfg_.peer_role.c_str(),
                       static_cast<size_t>(end - GRPC_SLICE_START_PTR(all)));
      }
      for (auto& frame : frames) {
        if (peer_end_ != kNoEnd) break;  // Nothing counts after the last frame.
        if (frame->kind != kData) {
          peer_end_ = frame->kind == kError ? kPeerError : kPeerBye;
          peer_text_ = frame->text;
          continue;
        }
        if (frame->sync && (!has_peer_step_ || frame->step >= peer_step_)) {
          has_peer_step_ = true;
          peer_step_ = frame->step;
          peer_phase_ = frame->phase;
        }
        mailbox_[frame->name].push_back(std::move(frame));
      }
    }
    cv_.notify_all();
  }

  int Broken(bool receiving, std::string* err) {
    std::lock_guard<std::mutex> l(mu_);
    return BrokenLocked(receiving, err);
  }

  // The error that explains why nothing more will come, or kOk (caller holds mu_). The peer's stream is in
  // order, so its end is known only once every frame before it was filed.
  int BrokenLocked(bool receiving, std::string* err) {
    (void)receiving;
    if (closing_) {
      *err = "this " + cfg_.role + "'s communicator is closed" +
             (close_error_.empty() ? "" : " with error: " + close_error_);
      return kClosed;
    }
    return PeerStateLocked(err);
  }

  int PeerStateLocked(std::string* err) {
    if (peer_end_ == kPeerError) {
      *err = "the " + cfg_.peer_role + " failed: " + peer_text_;
      return kPeerFailed;
    }
    if (peer_end_ == kPeerBye) {
      *err = "the " + cfg_.peer_role + " closed its communicator (it finished) and sends nothing more";
      return kPeerClosed;
    }
    if (!lost_.empty()) {
      *err = lost_detail_.empty() ? lost_ : lost_ + "; " + lost_detail_;
      return kLost;
    }
    return kOk;
  }

  // Both parties run the same procedure, so at one step they run the same phase (caller holds mu_).
  bool PhaseFits(const std::string& name, int64_t step, const std::string& peer_phase, std::string* err) {
    if (peer_phase.empty() || phase_.empty() || peer_phase == phase_) return true;
    *err = Format("at step %lld the %s runs a '%s' step but this %s runs a '%s' step (waiting for '%s'): the "
                  "parties' procedures diverged; give both the same procedure arguments (e.g. train_step, "
                  "eval_step, max_iter) and the same amount of data", static_cast<long long>(step),
                  cfg_.peer_role.c_str(), peer_phase.c_str(), cfg_.role.c_str(), phase_.c_str(), name.c_str());
    return false;
  }

  const Config cfg_;
  std::atomic<int64_t> step_{0};
  std::atomic<int64_t> send_limit_{0};

  // Receiving side; mu_ guards the rest.
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::deque<std::shared_ptr<Frame>>> mailbox_;
  bool has_peer_step_ = false;
  int64_t peer_step_ = 0;
  std::string peer_phase_;
  std::string phase_;
  std::string send_limit_variable_;
  int peer_end_ = kNoEnd;
  std::string peer_text_;
  std::string lost_;
  bool closing_ = false;
  std::string close_error_;
  bool shut_down_ = false;
  bool incoming_ended_ = false;

  grpc_server* server_ = nullptr;
  grpc_completion_queue* scq_ = nullptr;
  grpc_call* incoming_ = nullptr;
  grpc_call_details details_;
  grpc_metadata_array request_md_;
  std::thread serving_;
  // Server calls; calls_mu_ guards these (taken before mu_ where both are).
  std::mutex calls_mu_;
  std::condition_variable hello_cv_;
  std::deque<std::pair<int64_t, std::string>> hellos_;  // Hello requests Python has not taken yet.
  std::map<int64_t, ServerCall*> awaiting_;  // Hello calls waiting for Python's answer, by id.
  int64_t next_hello_id_ = 1;
  bool hello_stop_ = false;
  bool stream_taken_ = false;
  int live_calls_ = 0;
  bool requested_ = false;  // A grpc_server_request_call is pending.
  bool server_down_ = false;
  bool queue_down_ = false;

  // Sending side; send_mu_ serializes writes (a call takes one message at a time).
  std::mutex send_mu_;
  grpc_channel* channel_ = nullptr;
  grpc_completion_queue* ccq_ = nullptr;
  grpc_call* call_ = nullptr;
  grpc_metadata_array reply_md_;
  bool connected_ = false;
  bool finished_ = false;
  // The outgoing call's status, filled in by gRPC; status_known_ (under mu_) once it is.
  grpc_metadata_array trailing_md_;
  grpc_status_code status_ = GRPC_STATUS_OK;
  grpc_slice status_details_ = grpc_empty_slice();
  bool status_known_ = false;
  std::thread watching_;
  std::string lost_detail_;  // A second account of a lost connection (guarded by mu_).

};

// Endpoints by handle: graphs name their endpoint by an integer attribute.
struct Registry {
  std::mutex mu;
  std::map<int64_t, std::shared_ptr<Endpoint>> endpoints;
  int64_t next = 1;

  static Registry& Get() {
    static Registry* registry = new Registry();
    return *registry;
  }
  std::shared_ptr<Endpoint> Find(int64_t handle) {
    std::lock_guard<std::mutex> l(mu);
    auto it = endpoints.find(handle);
    return it == endpoints.end() ? nullptr : it->second;
  }
};

void CopyError(const std::string& text, char* buf, int size) {
  if (buf == nullptr || size <= 0) return;
  snprintf(buf, size, "%s", text.c_str());
}

}  // namespace efl_native

// ---------------------------------------------------------------------------------------------- C API

extern "C" {

using efl_native::Registry;

// The TLS arguments are PEM text or NULL (see Config).
int64_t efl_nt_create(const char* role, const char* peer_role, const char* peer_addr, int64_t send_limit,
                      const char* send_limit_variable, int64_t recv_limit, double scan_s, const char* peer_ca,
                      const char* my_cert, const char* my_key, const char* target_name_override,
                      int keepalive_time_ms, int keepalive_timeout_ms) {
  static std::once_flag init;
  std::call_once(init, [] {
    grpc_init();
  });
  efl_native::Config config;
  config.role = role;
  config.peer_role = peer_role;
  config.peer_addr = peer_addr;
  config.recv_limit = recv_limit;
  config.scan_s = scan_s > 0 ? scan_s : 1.0;
  config.peer_ca = peer_ca ? peer_ca : "";
  config.my_cert = my_cert ? my_cert : "";
  config.my_key = my_key ? my_key : "";
  config.target_name_override = target_name_override ? target_name_override : "";
  config.keepalive_time_ms = keepalive_time_ms;
  config.keepalive_timeout_ms = keepalive_timeout_ms;
  auto endpoint = std::make_shared<efl_native::Endpoint>(config);
  endpoint->set_send_limit(send_limit, send_limit_variable);
  Registry& registry = Registry::Get();
  std::lock_guard<std::mutex> l(registry.mu);
  int64_t handle = registry.next++;
  registry.endpoints[handle] = endpoint;
  return handle;
}

// Returns the port, or 0 with `err` set.
int efl_nt_listen(int64_t handle, const char* addr, char* err, int err_size) {
  auto endpoint = Registry::Get().Find(handle);
  if (!endpoint) return 0;
  std::string text;
  int port = endpoint->Listen(addr, &text);
  efl_native::CopyError(text, err, err_size);
  return port;
}

int efl_nt_connect(int64_t handle, const char* target, double timeout_s, char* err, int err_size) {
  auto endpoint = Registry::Get().Find(handle);
  if (!endpoint) return efl_native::kClosed;
  std::string text;
  int code = endpoint->Connect(target, timeout_s, &text);
  efl_native::CopyError(text, err, err_size);
  return code;
}

int64_t efl_nt_step(int64_t handle) {
  auto endpoint = Registry::Get().Find(handle);
  return endpoint ? endpoint->step() : -1;
}

void efl_nt_set_step(int64_t handle, int64_t step) {
  auto endpoint = Registry::Get().Find(handle);
  if (endpoint) endpoint->set_step(step);
}

void efl_nt_set_phase(int64_t handle, const char* phase) {
  auto endpoint = Registry::Get().Find(handle);
  if (endpoint) endpoint->set_phase(phase);
}

void efl_nt_set_send_limit(int64_t handle, int64_t limit, const char* variable) {
  auto endpoint = Registry::Get().Find(handle);
  if (endpoint) endpoint->set_send_limit(limit, variable);
}

// Sends one serialized Frames message (copied).
int efl_nt_send(int64_t handle, const char* message, int64_t size, const char* name, int64_t step, char* err,
                int err_size) {
  auto endpoint = Registry::Get().Find(handle);
  if (!endpoint) {
    efl_native::CopyError("this communicator's native transport is closed", err, err_size);
    return efl_native::kClosed;
  }
  grpc_slice slice = grpc_slice_from_copied_buffer(message, size);
  std::string text;
  int code = endpoint->Send(&slice, 1, name, step, &text);
  efl_native::CopyError(text, err, err_size);
  return code;
}

// On success `*frame` is a frame to read with efl_nt_frame_record and release with efl_nt_frame_free.
int efl_nt_recv(int64_t handle, const char* name, int64_t step, int sync, double timeout_s, void** frame,
                char* err, int err_size) {
  auto endpoint = Registry::Get().Find(handle);
  if (!endpoint) {
    efl_native::CopyError("this communicator's native transport is closed", err, err_size);
    return efl_native::kClosed;
  }
  std::shared_ptr<efl_native::Frame> out;
  std::string text;
  int code = endpoint->Recv(name, step, sync != 0, timeout_s, &out, &text);
  efl_native::CopyError(text, err, err_size);
  *frame = code == efl_native::kOk ? new std::shared_ptr<efl_native::Frame>(out) : nullptr;
  return code;
}

// Sends a tensor as a DATA frame (sync frames carry the endpoint's phase). The frame refers to `data` without
// a copy; `release(release_arg)` is called once gRPC no longer needs it, also when the send fails.
int efl_nt_send_tensor(int64_t handle, const char* name, int64_t step, int sync, const char* dtype, int ndims,
                       const int64_t* dims, const char* data, int64_t size, void (*release)(void*),
                       void* release_arg, char* err, int err_size) {
  grpc_slice payload = grpc_slice_new_with_user_data(const_cast<char*>(data), size, release, release_arg);
  auto endpoint = Registry::Get().Find(handle);
  if (!endpoint) {
    grpc_slice_unref(payload);
    efl_native::CopyError("this communicator's native transport is closed", err, err_size);
    return efl_native::kClosed;
  }
  std::vector<int64_t> shape(dims, dims + ndims);
  std::string header = efl_native::FrameHeader(name, step, sync != 0, dtype, shape,
                                               sync ? endpoint->phase() : std::string(), size);
  std::string head;  // The Frames.frames tag and length, then the frame's fields up to raw's bytes.
  efl_native::PutVarint(&head, (1 << 3) | 2);
  efl_native::PutVarint(&head, header.size() + size);
  head += header;
  grpc_slice parts[2] = {grpc_slice_from_copied_buffer(head.data(), head.size()), payload};
  std::string text;
  int code = endpoint->Send(parts, 2, name, step, &text);
  efl_native::CopyError(text, err, err_size);
  return code;
}

// What a received frame holds; the pointers live as long as the frame.
void efl_nt_frame_data(void* frame, const char** dtype, int* ndims, const int64_t** dims, const char** raw,
                       int64_t* raw_size) {
  auto& f = *static_cast<std::shared_ptr<efl_native::Frame>*>(frame);
  *dtype = f->dtype.c_str();
  *ndims = static_cast<int>(f->shape.size());
  *dims = f->shape.data();
  *raw = f->raw;
  *raw_size = f->raw_size;
}

// The serialized efl.Frame of a received frame.
const char* efl_nt_frame_record(void* frame, int64_t* size) {
  auto& f = *static_cast<std::shared_ptr<efl_native::Frame>*>(frame);
  *size = f->record_size;
  return f->record;
}

void efl_nt_frame_free(void* frame) { delete static_cast<std::shared_ptr<efl_native::Frame>*>(frame); }

// Writes BYE (error empty or NULL) or ERROR as the last frame; returns 1 when the stream half-closed within
// timeout_s.
int efl_nt_finish(int64_t handle, const char* error, double timeout_s) {
  auto endpoint = Registry::Get().Find(handle);
  return endpoint ? endpoint->Finish(error ? error : "", timeout_s) : 1;
}

// Waits at most timeout_s for the outgoing call's account of a lost connection.
void efl_nt_wait_detail(int64_t handle, double timeout_s) {
  auto endpoint = Registry::Get().Find(handle);
  if (endpoint) endpoint->WaitDetail(timeout_s);
}

// Returns 1 once the peer's stream ended (BYE, ERROR or loss), 0 if it did not within timeout_s.
int efl_nt_wait_end(int64_t handle, double timeout_s) {
  auto endpoint = Registry::Get().Find(handle);
  return endpoint ? endpoint->WaitEnd(timeout_s) : 1;
}

// kOk while the peer may still send, else the code and text of why it will not.
int efl_nt_peer_state(int64_t handle, char* err, int err_size) {
  auto endpoint = Registry::Get().Find(handle);
  if (!endpoint) return efl_native::kOk;
  std::string text;
  int code = endpoint->PeerState(&text);
  efl_native::CopyError(text, err, err_size);
  return code;
}

// The next Hello request (id > 0, bytes in *request to free with efl_nt_hello_free), 0 on timeout, -1 once the
// endpoint is gone.
int64_t efl_nt_next_hello(int64_t handle, double timeout_s, char** request, int64_t* size) {
  auto endpoint = Registry::Get().Find(handle);
  if (!endpoint) return -1;
  std::string text;
  int64_t id = endpoint->NextHello(timeout_s, &text);
  if (id > 0) {
    *request = static_cast<char*>(malloc(text.size() + 1));
    memcpy(*request, text.data(), text.size());
    *size = static_cast<int64_t>(text.size());
  }
  return id;
}

void efl_nt_hello_free(char* request) { free(request); }

// Answers Hello `id` with a serialized Greeting (NULL: the request was not one).
void efl_nt_answer_hello(int64_t handle, int64_t id, const char* reply, int64_t size) {
  auto endpoint = Registry::Get().Find(handle);
  if (endpoint) endpoint->AnswerHello(id, reply, static_cast<size_t>(size));
}

// Stops the transport and forgets the handle; kernels that hold the endpoint then fail with ClosedError.
void efl_nt_destroy(int64_t handle) {
  std::shared_ptr<efl_native::Endpoint> endpoint;
  {
    Registry& registry = Registry::Get();
    std::lock_guard<std::mutex> l(registry.mu);
    auto it = registry.endpoints.find(handle);
    if (it == registry.endpoints.end()) return;
    endpoint = it->second;
    registry.endpoints.erase(it);
  }
  endpoint->Shutdown();
}

}  // extern "C"
