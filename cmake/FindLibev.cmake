# FindLibev: libev ships no pkg-config file on Debian, so find it by header
# and library. Defines Libev_FOUND, Libev_INCLUDE_DIR, Libev_LIBRARY and the
# imported target Libev::libev.
find_path(Libev_INCLUDE_DIR NAMES ev.h PATH_SUFFIXES libev)
find_library(Libev_LIBRARY NAMES ev)

if(Libev_INCLUDE_DIR AND EXISTS "${Libev_INCLUDE_DIR}/ev.h")
  file(STRINGS "${Libev_INCLUDE_DIR}/ev.h" _libev_major REGEX "^#define EV_VERSION_MAJOR +[0-9]+")
  file(STRINGS "${Libev_INCLUDE_DIR}/ev.h" _libev_minor REGEX "^#define EV_VERSION_MINOR +[0-9]+")
  string(REGEX REPLACE ".* ([0-9]+)$" "\\1" _libev_major "${_libev_major}")
  string(REGEX REPLACE ".* ([0-9]+)$" "\\1" _libev_minor "${_libev_minor}")
  set(Libev_VERSION "${_libev_major}.${_libev_minor}")
endif()

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(Libev
  REQUIRED_VARS Libev_LIBRARY Libev_INCLUDE_DIR
  VERSION_VAR Libev_VERSION)

if(Libev_FOUND AND NOT TARGET Libev::libev)
  add_library(Libev::libev UNKNOWN IMPORTED)
  set_target_properties(Libev::libev PROPERTIES
    IMPORTED_LOCATION "${Libev_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${Libev_INCLUDE_DIR}")
endif()
mark_as_advanced(Libev_INCLUDE_DIR Libev_LIBRARY)
