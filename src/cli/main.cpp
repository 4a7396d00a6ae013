#include <cstdio>

int main() {
  std::puts("krait: under construction");
  return 0;
}
