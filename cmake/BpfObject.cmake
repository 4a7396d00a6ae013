# krait_bpf_skeleton(<target> SOURCE <file.bpf.c> DEPENDS <headers...>)
#
# Compiles one BPF C file with clang against the pinned vmlinux.h (CO-RE) and
# turns the object into a libbpf skeleton header with bpftool. <target> is an
# INTERFACE library: linking it puts <stem>.skel.h on the include path.
find_program(KRAIT_BPF_CLANG NAMES clang-14 clang REQUIRED)
find_program(KRAIT_BPFTOOL NAMES bpftool PATHS /usr/sbin /usr/local/sbin REQUIRED)

function(krait_bpf_skeleton target)
  cmake_parse_arguments(ARG "" "SOURCE" "DEPENDS" ${ARGN})
  get_filename_component(src "${ARG_SOURCE}" ABSOLUTE)
  get_filename_component(stem "${src}" NAME_WE)
  set(out_dir "${CMAKE_CURRENT_BINARY_DIR}/${target}")
  set(obj "${out_dir}/${stem}.bpf.o")
  set(skel "${out_dir}/${stem}.skel.h")
  add_custom_command(
    OUTPUT "${obj}"
    COMMAND ${CMAKE_COMMAND} -E make_directory "${out_dir}"
    COMMAND ${KRAIT_BPF_CLANG} -target bpf -g -O2 -D__TARGET_ARCH_x86 -Wall -Werror
            -I${PROJECT_SOURCE_DIR}/bpf/vmlinux/x86 -I${PROJECT_SOURCE_DIR}/bpf
            -I${PROJECT_SOURCE_DIR}/include -c "${src}" -o "${obj}"
    DEPENDS "${src}" ${ARG_DEPENDS}
    COMMENT "BPF ${stem}.bpf.c"
    VERBATIM)
  add_custom_command(
    OUTPUT "${skel}"
    COMMAND ${KRAIT_BPFTOOL} gen skeleton "${obj}" name ${stem}_bpf > "${skel}"
    DEPENDS "${obj}"
    COMMENT "skeleton ${stem}.skel.h"
    VERBATIM)
  add_custom_target(${target}_gen DEPENDS "${skel}")
  add_library(${target} INTERFACE)
  add_dependencies(${target} ${target}_gen)
  target_include_directories(${target} INTERFACE "${out_dir}")
endfunction()
