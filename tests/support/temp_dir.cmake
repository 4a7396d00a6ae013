# krait_test_temp_dir: the scratch directory of every test and benchmark
# (support/temp_dir.h). Included by tests/support and by the unwind fixtures,
# which benchmarks build without the test tree; defined once.
include_guard(GLOBAL)
add_library(krait_test_temp_dir STATIC ${CMAKE_CURRENT_LIST_DIR}/temp_dir.cpp)
target_include_directories(krait_test_temp_dir PUBLIC ${PROJECT_SOURCE_DIR}/tests)
target_link_libraries(krait_test_temp_dir PUBLIC krait_util PRIVATE krait_warnings)
