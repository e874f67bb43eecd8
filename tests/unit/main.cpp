#include <gtest/gtest.h>

#include "l4q/runtime.h"

int main(int argc, char** argv) {
  l4q::init_runtime();
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
