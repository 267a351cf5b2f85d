// A minimal test harness for the C++ core (no external dependency): TEST(name) registers a
// function; CHECK/CHECK_EQ/CHECK_THROWS record failures with file and line; main runs them all.
#pragma once

#include <cstdio>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

namespace hinm_test {

struct Case {
  const char* name;
  std::function<void()> fn;
};
inline std::vector<Case>& registry() {
  static std::vector<Case> cases;
  return cases;
}
inline int& failures() {
  static int n = 0;
  return n;
}
struct Register {
  Register(const char* name, std::function<void()> fn) { registry().push_back({name, std::move(fn)}); }
};
inline void fail(const char* file, int line, const std::string& what) {
  ++failures();
  std::fprintf(stderr, "%s:%d: FAILED: %s\n", file, line, what.c_str());
}

}  // namespace hinm_test

#define HINM_CAT2(a, b) a##b
#define HINM_CAT(a, b) HINM_CAT2(a, b)
#define TEST(name)                                                             \
  static void name();                                                          \
  static hinm_test::Register HINM_CAT(register_, name)(#name, name);           \
  static void name()

#define CHECK(cond) \
  do { if (!(cond)) hinm_test::fail(__FILE__, __LINE__, #cond); } while (0)

#define CHECK_EQ(a, b)                                                                   \
  do {                                                                                   \
    auto va_ = (a); auto vb_ = (b);                                                      \
    if (!(va_ == vb_)) {                                                                 \
      std::ostringstream os_; os_ << #a " == " #b " (" << +va_ << " vs " << +vb_ << ")"; \
      hinm_test::fail(__FILE__, __LINE__, os_.str());                                    \
    }                                                                                    \
  } while (0)

#define CHECK_THROWS(stmt, Exc)                                                         \
  do {                                                                                  \
    bool thrown_ = false;                                                               \
    try { stmt; } catch (const Exc&) { thrown_ = true; } catch (...) {}                 \
    if (!thrown_) hinm_test::fail(__FILE__, __LINE__, #stmt " did not throw " #Exc);     \
  } while (0)
