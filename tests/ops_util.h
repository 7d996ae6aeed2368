// Helpers for tests of the operations surface of real server processes
// (shards, the serving tier): HTTP GET of /metrics, reading one sample of
// the exposition text, `promtool check metrics`, a server-reflection
// stream.
//
// Thread-safety: not thread-safe; each object belongs to one test thread.
#ifndef MIM_TESTS_OPS_UTIL_H_
#define MIM_TESTS_OPS_UTIL_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/client_context.h"
#include "grpcpp/completion_queue.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/impl/codegen/proto_utils.h"  // protobuf messages on streams
#include "tests/reflection.pb.h"

namespace mim::testing {

// GET http://127.0.0.1:port/path (HTTP/1.0). The body of a 200 response;
// UNAVAILABLE when nothing answers, INTERNAL for another response.
absl::StatusOr<std::string> HttpGet(int port, const std::string& path);

// The value of the sample `series` (name and labels exactly as the text
// format writes them, e.g. mim_ps_keys_total{method="Pull"}); nullopt when
// the scrape has no such sample.
std::optional<double> MetricSample(const std::string& text,
                                   const std::string& series);

// Runs `promtool check metrics` on `text` (written to `scratch_file`).
// OK when promtool accepts it silently; FAILED_PRECONDITION with its output
// otherwise; NOT_FOUND when /usr/bin/promtool is not installed.
absl::Status PromtoolCheck(const std::string& text,
                           const std::string& scratch_file);

// One grpc.reflection.v1alpha.ServerReflectionInfo stream, called by its
// method path (tests/reflection.proto says why there is no generated stub),
// one operation at a time on a completion queue.
class ReflectionStream {
 public:
  using Request = ::mim::testing::reflection::ServerReflectionRequest;
  using Response = ::mim::testing::reflection::ServerReflectionResponse;

  explicit ReflectionStream(const std::string& address)
      : stub_(
            grpc::CreateChannel(address, grpc::InsecureChannelCredentials())) {
    context_.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
    call_ = stub_.PrepareCall(
        &context_,
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq_);
    call_->StartCall(kTag);
    started_ = Next();
  }

  ~ReflectionStream() {
    if (!finished_) {
      context_.TryCancel();
      grpc::Status ignored;
      call_->Finish(&ignored, kTag);
      Next();
    }
    cq_.Shutdown();
    void* tag;
    bool ok;
    while (cq_.Next(&tag, &ok)) {
    }
  }

  // Sends `request` and reads its answer; false when the stream broke.
  bool Ask(const Request& request, Response* response) {
    if (!started_) return false;
    call_->Write(request, kTag);
    if (!Next()) return false;
    call_->Read(response, kTag);
    return Next();
  }

  // Half-closes the stream and returns the server's final status.
  grpc::Status Finish() {
    call_->WritesDone(kTag);
    Next();
    grpc::Status status;
    call_->Finish(&status, kTag);
    Next();
    finished_ = true;
    return status;
  }

 private:
  static inline void* const kTag = reinterpret_cast<void*>(1);

  // Waits for the one operation in flight; whether it succeeded.
  bool Next() {
    void* tag = nullptr;
    bool ok = false;
    return cq_.Next(&tag, &ok) && ok;
  }

  grpc::TemplatedGenericStub<Request, Response> stub_;
  grpc::ClientContext context_;
  grpc::CompletionQueue cq_;
  std::unique_ptr<grpc::ClientAsyncReaderWriter<Request, Response>> call_;
  bool started_ = false;
  bool finished_ = false;
};

// The services `address` lists through server reflection (empty on error).
std::vector<std::string> ReflectedServices(const std::string& address);

}  // namespace mim::testing

#endif  // MIM_TESTS_OPS_UTIL_H_
