# cmake/install.cmake: what `cmake --install` puts in the prefix.
#
#   lib/libweft.so.X.Y.Z, libweft.so.X, libweft.so  the shared library (weft::weft)
#   lib/libweft.a                                     jemalloc and liburing folded in, localised
#   include/weft/*.h                                  the public headers, version.h included
#   lib/pkgconfig/weft.pc                             pkg-config weft (--static for libweft.a)
#   lib/cmake/weft/weft{Config,ConfigVersion,Targets}.cmake
#                                                     find_package(weft): weft::weft and weft::weft_static
#
# tests/consumer/ builds against this tree both ways (scripts/test_consumer.sh).

include(CMakePackageConfigHelpers)

set(WEFT_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/weft)

install(TARGETS weft EXPORT weftTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT runtime NAMELINK_COMPONENT dev
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT runtime)
install(TARGETS weft_static EXPORT weftTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev)

# Public headers: every include/weft/*.h (new headers are picked up), plus the
# generated version.h.
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/weft/
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/weft COMPONENT dev
  FILES_MATCHING PATTERN "*.h")
install(FILES ${PROJECT_BINARY_DIR}/include/weft/version.h
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/weft COMPONENT dev)

# pkg-config. The prefix is written relative to the .pc file's own folder
# (${pcfiledir}), so `cmake --install --prefix P` and DESTDIR both work.
set(WEFT_PC_DIR ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}" OR IS_ABSOLUTE "${CMAKE_INSTALL_INCLUDEDIR}")
  # An absolute libdir/includedir (a distribution's layout): write absolute paths.
  set(WEFT_PC_RELPREFIX "")
  set(WEFT_PC_LIBDIR "${CMAKE_INSTALL_FULL_LIBDIR}")
  set(WEFT_PC_INCLUDEDIR "${CMAKE_INSTALL_FULL_INCLUDEDIR}")
  if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}")
    set(WEFT_PC_DIR ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
  endif()
else()
  file(RELATIVE_PATH WEFT_PC_RELPREFIX /root/${WEFT_PC_DIR} /root)
  string(REGEX REPLACE "/$" "" WEFT_PC_RELPREFIX "${WEFT_PC_RELPREFIX}")
  set(WEFT_PC_LIBDIR "\${prefix}/${CMAKE_INSTALL_LIBDIR}")
  set(WEFT_PC_INCLUDEDIR "\${prefix}/${CMAKE_INSTALL_INCLUDEDIR}")
endif()
configure_file(${PROJECT_SOURCE_DIR}/cmake/weft.pc.in ${PROJECT_BINARY_DIR}/weft.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/weft.pc DESTINATION ${WEFT_PC_DIR} COMPONENT dev)

# CMake package: find_package(weft) gives weft::weft (shared) and
# weft::weft_static (libweft.a; it needs Threads, which the config finds).
install(EXPORT weftTargets NAMESPACE weft:: DESTINATION ${WEFT_CMAKE_DIR} COMPONENT dev)
file(WRITE ${PROJECT_BINARY_DIR}/weftConfig.cmake.in [=[
# weftConfig.cmake: find_package(weft) -> weft::weft (libweft.so) and
# weft::weft_static (libweft.a, jemalloc and liburing inside, localised).
@PACKAGE_INIT@
include(CMakeFindDependencyMacro)
find_dependency(Threads)
include("${CMAKE_CURRENT_LIST_DIR}/weftTargets.cmake")
check_required_components(weft)
]=])
configure_package_config_file(${PROJECT_BINARY_DIR}/weftConfig.cmake.in
  ${PROJECT_BINARY_DIR}/weftConfig.cmake INSTALL_DESTINATION ${WEFT_CMAKE_DIR})
# 0.x: a minor release may break the ABI (the soname says so), so only the
# same major.minor is compatible; from 1.0 on, SameMajorVersion.
if(PROJECT_VERSION_MAJOR EQUAL 0)
  set(WEFT_COMPAT SameMinorVersion)
else()
  set(WEFT_COMPAT SameMajorVersion)
endif()
write_basic_package_version_file(${PROJECT_BINARY_DIR}/weftConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY ${WEFT_COMPAT})
install(FILES ${PROJECT_BINARY_DIR}/weftConfig.cmake ${PROJECT_BINARY_DIR}/weftConfigVersion.cmake
  DESTINATION ${WEFT_CMAKE_DIR} COMPONENT dev)
