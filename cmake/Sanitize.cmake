# Instrumentation for the sanitizer and fuzzing tiers (docs/testing.md).
#
# KRAIT_SANITIZE=<list> (e.g. address,undefined or thread): every target
# defined after this point is compiled and linked with -fsanitize=<list>, and
# any report is fatal (-fno-sanitize-recover=all).
# KRAIT_FUZZ=ON (clang only): the same with address,undefined plus libFuzzer's
# coverage (fuzzer-no-link); the harnesses add -fsanitize=fuzzer themselves.
#
# Test fixtures are inputs, not our code under test: programs the tests run
# or inspect must look like ordinary binaries (one is static, one is loaded
# into CPython), so they opt out with krait_no_sanitize(). The BPF object is
# compiled by a custom command and never sees these flags.
set(KRAIT_INSTRUMENT_COMPILE_FLAGS "")
set(KRAIT_INSTRUMENT_LINK_FLAGS "")
if(KRAIT_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang" OR NOT CMAKE_C_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "KRAIT_FUZZ needs clang: configure with CC=clang CXX=clang++")
  endif()
  if(KRAIT_SANITIZE)
    message(FATAL_ERROR "KRAIT_FUZZ builds with address,undefined already; leave KRAIT_SANITIZE empty")
  endif()
  set(KRAIT_INSTRUMENT_COMPILE_FLAGS -fsanitize=fuzzer-no-link,address,undefined
      -fno-sanitize-recover=all -fno-omit-frame-pointer)
  set(KRAIT_INSTRUMENT_LINK_FLAGS -fsanitize=address,undefined)
elseif(KRAIT_SANITIZE)
  set(KRAIT_INSTRUMENT_COMPILE_FLAGS -fsanitize=${KRAIT_SANITIZE} -fno-sanitize-recover=all
      -fno-omit-frame-pointer)
  set(KRAIT_INSTRUMENT_LINK_FLAGS -fsanitize=${KRAIT_SANITIZE})
endif()
if(KRAIT_INSTRUMENT_COMPILE_FLAGS)
  message(STATUS "krait: instrumenting with ${KRAIT_INSTRUMENT_COMPILE_FLAGS}")
  add_compile_options(${KRAIT_INSTRUMENT_COMPILE_FLAGS})
  add_link_options(${KRAIT_INSTRUMENT_LINK_FLAGS})
  # GCC's flow warnings are unreliable under instrumentation (its manual says
  # so for -fsanitize): GCC 12 reports std::function members inside
  # libstdc++'s <regex> as maybe-uninitialized. The plain build keeps them.
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    add_compile_options(-Wno-maybe-uninitialized)
  endif()
endif()

# krait_no_sanitize(<target>...): builds these targets without the flags
# above. Call it right after add_executable/add_library.
function(krait_no_sanitize)
  if(NOT KRAIT_INSTRUMENT_COMPILE_FLAGS)
    return()
  endif()
  foreach(target ${ARGN})
    foreach(property COMPILE_OPTIONS LINK_OPTIONS)
      get_target_property(options ${target} ${property})
      if(options)
        list(REMOVE_ITEM options ${KRAIT_INSTRUMENT_COMPILE_FLAGS} ${KRAIT_INSTRUMENT_LINK_FLAGS})
        set_property(TARGET ${target} PROPERTY ${property} ${options})
      endif()
    endforeach()
  endforeach()
endfunction()
