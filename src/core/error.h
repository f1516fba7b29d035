// Errors: every failure the user can cause (bad file, bad config, bad input) is a sa2va::Error
// whose message names the file or argument and the problem, in one line.
#pragma once
#include <string>

#include "sa2va/sa2va.h"  // defines sa2va::Error, the one exception type of the public API

namespace sa2va {

// Throws Error(message) when the condition is false. Used for input validation, not internal bugs.
inline void check(bool condition, const std::string& message) {
  if (!condition) throw Error(message);
}

}  // namespace sa2va
