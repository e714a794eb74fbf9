# Installation of the deployment files, and the Debian package.
#
# Included from the top CMakeLists.txt after install(TARGETS nomad-medic ...),
# so the package holds the binary, the shipped policies and everything below.
# Destinations are relative to CMAKE_INSTALL_PREFIX; the package uses /usr:
#
#   /usr/bin/nomad-medic
#   /usr/lib/systemd/system/nomad-medic-{cluster,node}.service
#   /usr/share/nomad-medic/acl/nomad-medic-{cluster,node}.policy.hcl
#   /usr/share/nomad-medic/nomad/nomad-medic-{cluster,node}.nomad.{hcl,json}
#   /usr/share/nomad-medic/nomad-medic.conf.example
#   /usr/share/nomad-medic/nomad-medic-node.conf.example
#   /usr/share/nomad-medic/policies/{default,audit}.conf
#   /usr/share/doc/nomad-medic/README.md, deploy.md
#
# The units run /usr/bin/nomad-medic, so an installation from source that the
# units should start needs -DCMAKE_INSTALL_PREFIX=/usr.
#
# Build the package in a build directory with:
#   cpack -G DEB
# which writes nomad-medic_<version>_<architecture>.deb there.

set(NM_DEPLOY_DIR ${PROJECT_SOURCE_DIR}/deploy)

install(FILES
  ${NM_DEPLOY_DIR}/systemd/nomad-medic-cluster.service
  ${NM_DEPLOY_DIR}/systemd/nomad-medic-node.service
  DESTINATION lib/systemd/system)

install(FILES
  ${NM_DEPLOY_DIR}/acl/nomad-medic-cluster.policy.hcl
  ${NM_DEPLOY_DIR}/acl/nomad-medic-node.policy.hcl
  DESTINATION share/nomad-medic/acl)

install(FILES
  ${NM_DEPLOY_DIR}/nomad/nomad-medic-cluster.nomad.hcl
  ${NM_DEPLOY_DIR}/nomad/nomad-medic-cluster.nomad.json
  ${NM_DEPLOY_DIR}/nomad/nomad-medic-node.nomad.hcl
  ${NM_DEPLOY_DIR}/nomad/nomad-medic-node.nomad.json
  DESTINATION share/nomad-medic/nomad)

# Examples, not live configuration: the package installs nothing under /etc,
# so an upgrade never touches an operator's files.
install(FILES
  ${NM_DEPLOY_DIR}/config/nomad-medic.conf.example
  ${NM_DEPLOY_DIR}/config/nomad-medic-node.conf.example
  DESTINATION share/nomad-medic)

install(FILES ${PROJECT_SOURCE_DIR}/README.md DESTINATION share/doc/nomad-medic)
install(FILES ${NM_DEPLOY_DIR}/README.md DESTINATION share/doc/nomad-medic RENAME deploy.md)

# ---------------------------------------------------------------------------
# CPack: the Debian package.

set(NOMAD_MEDIC_PACKAGE_MAINTAINER
    "nomad-medic maintainers <maintainers@users.noreply.r-seed-438e3cdf.example>"
    CACHE STRING "Maintainer field of the Debian package: \"Name <email>\"")

set(CPACK_PACKAGE_NAME "nomad-medic")
set(CPACK_PACKAGE_VERSION "${PROJECT_VERSION}")
set(CPACK_PACKAGE_VENDOR "nomad-medic")
set(CPACK_PACKAGE_CONTACT "${NOMAD_MEDIC_PACKAGE_MAINTAINER}")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "remediation controller for HashiCorp Nomad clusters")
# dpkg shows the summary as the first line of Description and these lines below it.
string(CONCAT CPACK_PACKAGE_DESCRIPTION
  "nomad-medic reads a Nomad cluster through its HTTP API, compares it with\n"
  "a policy and repairs what the policy allows: orphaned native service\n"
  "registrations, piles of terminal objects (forced GC), client agents that\n"
  "hang while their host lives, and, on each client host, the network\n"
  "namespaces and CNI state that crashed allocations leave behind. Every\n"
  "action is rate-limited and journaled in SQLite, and the default mode is a\n"
  "dry run. The package contains systemd units, Nomad job files and\n"
  "least-privilege ACL policies for both scopes.")
set(CPACK_PACKAGING_INSTALL_PREFIX "/usr")
set(CPACK_STRIP_FILES ON)

set(CPACK_GENERATOR "DEB")
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${NOMAD_MEDIC_PACKAGE_MAINTAINER}")
set(CPACK_DEBIAN_PACKAGE_SECTION "admin")
set(CPACK_DEBIAN_PACKAGE_PRIORITY "optional")
# dpkg-shlibdeps (package dpkg-dev) derives the dependencies from the
# libraries the binary links, with their minimum versions, so a library
# linked later, or a sanitizer runtime, is never missing from the package.
# Without it, the runtime packages of the build dependencies on Debian 12
# are named by hand.
find_program(NM_DPKG_SHLIBDEPS dpkg-shlibdeps)
if(NM_DPKG_SHLIBDEPS)
  set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
else()
  message(STATUS "dpkg-shlibdeps not found (package dpkg-dev): the Debian package names its dependencies by hand")
  set(CPACK_DEBIAN_PACKAGE_DEPENDS "libc6, libcurl4, libcjson1, libconfig9, libsqlite3-0, libarchive13, libssl3")
endif()
# The node scope runs the CNI plugins and iptables to remove leaked network state.
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "containernetworking-plugins, iptables")
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION TRUE)

include(CPack)
