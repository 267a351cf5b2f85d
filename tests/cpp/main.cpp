#include <cstdio>
#include <cstring>

#include "check.hpp"

// Runs every registered test, or only those whose name contains argv[1].
int main(int argc, char** argv) {
  int run = 0;
  for (auto& c : hinm_test::registry()) {
    if (argc > 1 && std::strstr(c.name, argv[1]) == nullptr) continue;
    const int before = hinm_test::failures();
    try {
      c.fn();
    } catch (const std::exception& e) {
      hinm_test::fail(__FILE__, __LINE__, std::string(c.name) + " threw: " + e.what());
    }
    std::printf("%s %s\n", hinm_test::failures() == before ? "[ OK ]" : "[FAIL]", c.name);
    ++run;
  }
  std::printf("%d tests, %d failures\n", run, hinm_test::failures());
  return hinm_test::failures() == 0 && run > 0 ? 0 : 1;
}
