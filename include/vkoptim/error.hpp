#pragma once
// Errors thrown by the C++ API. The C API maps them to vko_status codes (vkoptim.h).
#include <stdexcept>
#include <string>

namespace vkoptim {

// Values equal the C API's vko_status codes.
enum class Status : int {
  ok = 0,
  invalid_argument = 1,  // an argument is out of range, null, mismatched or inconsistent
  unsupported = 2,       // the device or driver lacks something the request needs
  out_of_memory = 3,     // a device or host allocation failed
  vulkan_error = 4,      // a Vulkan call failed; the message names the call and the VkResult
  invalid_state = 5,     // the call is not allowed now (e.g. adding tensors after the first step)
  not_found = 6,         // no such state name, tensor or group
  // (7 is the C API's VKO_INTERNAL_ERROR)
  io_error = 8,  // reading or writing a file failed; the message names the file and the reason
};

// Every failure of the C++ API. what() names the offending argument and its value.
class Error : public std::runtime_error {
 public:
  Error(Status status, const std::string& message) : std::runtime_error(message), status_(status) {}
  Status status() const noexcept { return status_; }

 private:
  Status status_;
};

}  // namespace vkoptim
