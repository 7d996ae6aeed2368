#include "tests/ops_util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "tests/process.h"

namespace mim::testing {

// GET http://127.0.0.1:port/path (HTTP/1.0, so the server closes the
// connection after the response). Returns the body of a 200 response.
absl::StatusOr<std::string> HttpGet(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  }
  sockaddr_in addr = {};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string response;
  bool sent = false;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    const std::string request =
        absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    sent = write(fd, request.data(), request.size()) ==
           static_cast<ssize_t>(request.size());
    char buf[4096];
    ssize_t n;
    while (sent && (n = read(fd, buf, sizeof(buf))) > 0) {
      response.append(buf, static_cast<size_t>(n));
    }
  }
  const int error = errno;
  close(fd);
  if (!sent) {
    return absl::UnavailableError(
        absl::StrCat("GET 127.0.0.1:", port, path, ": ", std::strerror(error)));
  }
  const size_t body = response.find("\r\n\r\n");
  if (!absl::StartsWith(response, "HTTP/1.1 200 ") ||
      body == std::string::npos) {
    return absl::InternalError("unexpected HTTP response: " + response);
  }
  return response.substr(body + 4);
}

// The value of the sample `series` (name and labels exactly as the text
// format writes them, e.g. mim_ps_keys_total{method="Pull"}); nullopt when
// the scrape has no such sample.
std::optional<double> MetricSample(const std::string& text,
                             const std::string& series) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (!absl::ConsumePrefix(&line, series) ||
        !absl::ConsumePrefix(&line, " ")) {
      continue;
    }
    double value = 0;
    if (absl::SimpleAtod(line, &value)) return value;
  }
  return std::nullopt;
}

absl::Status PromtoolCheck(const std::string& text,
                           const std::string& scratch_file) {
  constexpr char kPromtool[] = "/usr/bin/promtool";
  if (access(kPromtool, X_OK) != 0) {
    return absl::NotFoundError(absl::StrCat(
        kPromtool, " is not installed (tools/setup.sh installs the prometheus "
                   "package)"));
  }
  std::ofstream(scratch_file) << text;
  absl::StatusOr<CommandResult> check = RunCommand(
      {"/bin/sh", "-c", absl::StrCat(kPromtool, " check metrics < ", scratch_file)});
  if (!check.ok()) return check.status();
  if (check->exit_code != 0 || !check->out.empty() || !check->err.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "promtool exit ", check->exit_code, ": ", check->out, check->err));
  }
  return absl::OkStatus();
}

std::vector<std::string> ReflectedServices(const std::string& address) {
  ReflectionStream stream(address);
  ReflectionStream::Request list;
  list.set_list_services("");
  ReflectionStream::Response listed;
  std::vector<std::string> services;
  if (!stream.Ask(list, &listed) || !listed.has_list_services_response()) {
    return services;
  }
  for (const auto& s : listed.list_services_response().service()) {
    services.push_back(s.name());
  }
  stream.Finish();
  return services;
}

}  // namespace mim::testing
