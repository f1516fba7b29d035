// Errors: every failure the user can cause (bad file, bad config, bad input) is a sa2va::Error
// whose message names the file or argument and the problem, in one line.
#pragma once
#include <stdexcept>
#include <string>

namespace sa2va {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// Throws Error(message) when the condition is false. Used for input validation, not internal bugs.
inline void check(bool condition, const std::string& message) {
  if (!condition) throw Error(message);
}

}  // namespace sa2va
