# Which librdkafka rill builds against: the system's, found by pkg-config
# (Debian 12: 2.0.2), or the one installed in RILL_LIBRDKAFKA_PREFIX, e.g.
# the 2.8.0 that tools/build-librdkafka builds into build/deps:
#
#   cmake -S . -B build/rdk28 -DRILL_LIBRDKAFKA_PREFIX="$(tools/build-librdkafka)"
#
# With a prefix, every binary of the tree (libraries, tests, benches,
# examples, rill-broker) links that librdkafka and finds it at run time
# through its RUNPATH, also once installed; there is no silent fallback to
# the system's: configuring fails if pkg-config finds rdkafka anywhere else,
# and the test librdkafka_version fails if the one running is not the one
# configured.
#
# Sets the imported target PkgConfig::RDKAFKA, RDKAFKA_VERSION and
# RILL_LIBRDKAFKA_LIBRARY (the librdkafka.so linked).

set(RILL_LIBRDKAFKA_PREFIX "" CACHE PATH
  "Build against the librdkafka installed in this prefix (e.g. by tools/build-librdkafka) instead of the system's")

set(_rill_rdk_prefix "")
if(RILL_LIBRDKAFKA_PREFIX)
  get_filename_component(_rill_rdk_prefix "${RILL_LIBRDKAFKA_PREFIX}" REALPATH
    BASE_DIR "${CMAKE_BINARY_DIR}")
  if(NOT EXISTS "${_rill_rdk_prefix}/lib/pkgconfig/rdkafka.pc")
    message(FATAL_ERROR "RILL_LIBRDKAFKA_PREFIX=${RILL_LIBRDKAFKA_PREFIX}: there is no "
      "lib/pkgconfig/rdkafka.pc in ${_rill_rdk_prefix} (tools/build-librdkafka builds one "
      "and prints its prefix)")
  endif()
  set(ENV{PKG_CONFIG_PATH} "${_rill_rdk_prefix}/lib/pkgconfig:$ENV{PKG_CONFIG_PATH}")
endif()

# pkg_check_modules keeps its answer in the cache, and the library files
# it found (pkgcfg_lib_RDKAFKA_*): when the prefix changes (or is removed),
# look again.
if(NOT "${_rill_rdk_prefix}" STREQUAL "${_RILL_RDK_PREFIX_SEEN}")
  unset(__pkg_config_checked_RDKAFKA CACHE)
  get_cmake_property(_rill_cache_vars CACHE_VARIABLES)
  foreach(_v IN LISTS _rill_cache_vars)
    if(_v MATCHES "^pkgcfg_lib_RDKAFKA_")
      unset(${_v} CACHE)
    endif()
  endforeach()
  set(_RILL_RDK_PREFIX_SEEN "${_rill_rdk_prefix}" CACHE INTERNAL "prefix RDKAFKA was found with")
endif()
pkg_check_modules(RDKAFKA REQUIRED IMPORTED_TARGET rdkafka>=2.0)

# The library file rill links (a full path: pkg-config's -L/-l resolved).
set(RILL_LIBRDKAFKA_LIBRARY "")
foreach(_l IN LISTS RDKAFKA_LINK_LIBRARIES)
  if(_l MATCHES "/librdkafka\\.so$")
    set(RILL_LIBRDKAFKA_LIBRARY "${_l}")
  endif()
endforeach()
if(NOT RILL_LIBRDKAFKA_LIBRARY)
  message(FATAL_ERROR "pkg-config's rdkafka ${RDKAFKA_VERSION} names no librdkafka.so "
    "(RDKAFKA_LINK_LIBRARIES: ${RDKAFKA_LINK_LIBRARIES})")
endif()

if(_rill_rdk_prefix)
  get_filename_component(_rill_rdk_libdir "${RILL_LIBRDKAFKA_LIBRARY}" DIRECTORY)
  if(NOT _rill_rdk_libdir STREQUAL "${_rill_rdk_prefix}/lib")
    message(FATAL_ERROR "RILL_LIBRDKAFKA_PREFIX=${_rill_rdk_prefix}, but rill would link "
      "${RILL_LIBRDKAFKA_LIBRARY} (rdkafka ${RDKAFKA_VERSION})")
  endif()
  # Installed binaries keep the prefix's lib directory in their RUNPATH
  # (the build tree's binaries get it anyway: CMake adds the directory of
  # every linked library outside the system's; INSTALL_RPATH_USE_LINK_PATH
  # does not, for a library linked by its full path).
  list(APPEND CMAKE_INSTALL_RPATH "${_rill_rdk_prefix}/lib")
  message(STATUS "librdkafka ${RDKAFKA_VERSION} from ${_rill_rdk_prefix}")
else()
  message(STATUS "librdkafka ${RDKAFKA_VERSION} (the system's, found by pkg-config)")
endif()
