# The krait Debian package. Included from the top-level CMakeLists.txt after
# install(TARGETS krait ...):
#   include(packaging/cpack.cmake)
# Then, in a build directory: `cpack -G DEB` writes krait_<version>_<arch>.deb
# with /usr/bin/krait, the systemd unit, the default configuration
# /etc/krait/krait.toml (a conffile: upgrades keep local edits) and the
# daemon and packaging documentation. Dependencies come from
# dpkg-shlibdeps (package dpkg-dev) on the installed binary.

set(krait_packaging_dir ${CMAKE_CURRENT_LIST_DIR})

# /usr/lib/systemd/system: the same directory as /lib/... on merged-/usr systems.
install(FILES ${krait_packaging_dir}/systemd/krait.service DESTINATION lib/systemd/system)
# Absolute: /etc is not under the /usr prefix.
install(FILES ${krait_packaging_dir}/krait.toml DESTINATION /etc/krait)
install(FILES ${PROJECT_SOURCE_DIR}/docs/daemon.md ${PROJECT_SOURCE_DIR}/docs/packaging.md
        DESTINATION share/doc/krait)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME krait)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "krait")
# Placeholder maintainer: replace with the real one before publishing.
set(CPACK_PACKAGE_CONTACT "krait maintainers <krait@example.org>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "system-wide eBPF sampling profiler for CPython")
set(CPACK_PACKAGE_DESCRIPTION
    "krait samples every Python process on a host with an eBPF program, names Python,\n"
    "native and kernel frames, and writes pprof profiles. `krait record` profiles on\n"
    "demand; the krait service (`krait daemon`) profiles continuously and uploads to\n"
    "Grafana Pyroscope or keeps the profiles as files.")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION utils)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# postinst creates the krait user with adduser.
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${krait_packaging_dir}/debian/conffiles
    ${krait_packaging_dir}/debian/postinst
    ${krait_packaging_dir}/debian/prerm
    ${krait_packaging_dir}/debian/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION TRUE)
include(CPack)
