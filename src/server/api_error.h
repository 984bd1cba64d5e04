// ApiError: a request the server refuses, carried as an exception to the HTTP layer, which turns
// it into OpenAI's error object {"error": {"message", "type", "param", "code"}} with its status.
#pragma once
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

namespace nanovllm::server {

class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string message, std::string param = "", std::string code = "",
           std::string type = "")
      : std::runtime_error(message), status_(status), param_(std::move(param)), code_(std::move(code)),
        type_(type.empty() ? default_type(status) : std::move(type)) {}

  int status() const { return status_; }
  const std::string& param() const { return param_; }
  const std::string& code() const { return code_; }
  const std::string& type() const { return type_; }

  nlohmann::json to_json() const {
    nlohmann::json err = {{"message", what()}, {"type", type_}, {"param", nullptr}, {"code", nullptr}};
    if (!param_.empty()) err["param"] = param_;
    if (!code_.empty()) err["code"] = code_;
    return {{"error", std::move(err)}};
  }

 private:
  // OpenAI's error types by status, so clients that switch on `type` behave as with OpenAI.
  static std::string default_type(int status) {
    if (status == 401) return "authentication_error";
    if (status == 404) return "not_found_error";
    if (status == 503) return "service_unavailable";
    if (status >= 500) return "server_error";
    return "invalid_request_error";
  }

  int status_;
  std::string param_, code_, type_;
};

// The common case: a 400 naming the offending parameter.
inline ApiError bad_request(const std::string& param, const std::string& message) {
  return ApiError(400, message, param, "invalid_value");
}

}  // namespace nanovllm::server
