# cmake/static.cmake: weft_static, the static archive libweft.a.
#
# libweft.a holds ONE relocatable object, weft_all.o, made in three steps:
#   1. a partial link (ld -r) of every object of weft_objects together with
#      jemalloc (libjemalloc_pic.a, when WEFT_JEMALLOC is ON) and liburing
#      (liburing.a). The archives are searched, not --whole-archive'd: ld -r
#      pulls the members that weft needs, as a normal link would. Whole-archive
#      would also pull jemalloc_cpp.o (operator new/delete), which needs
#      libstdc++ and would force every C program that links libweft.a to link
#      it too. The archives are grouped because liburing calls calloc/free:
#      inside weft those bind to jemalloc, like the rest of the runtime.
#   2. objcopy --keep-global-symbols=<list> makes every symbol local except
#      the public API. The list is generated from the object itself (nm):
#      the global defined symbols named weft_<letter or digit>... Internal
#      symbols are weft__x (two underscores) and become local, as do jemalloc's
#      malloc, free, mallctl, ... and liburing's io_uring_*. The step then
#      checks that nothing else is left global.
#   3. the archive: CMake's own archive rule (ar qc + ranlib) of that object.
#
# So a program linking libweft.a keeps its own malloc, the runtime allocates
# from its private jemalloc, and the program may use another liburing version.
# When WEFT_JEMALLOC is OFF (sanitizer builds) only liburing is folded in.
#
# Consequence for the library's code (the same holds in libweft.so, where
# --exclude-libs binds weft's references to the private jemalloc too): inside
# weft, malloc/free/realloc ARE jemalloc's. Memory that glibc allocates
# (strdup, asprintf, getline, realpath(p, NULL), scandir, ...) must not be
# free()d by weft, and memory weft malloc()s must not be handed to the user
# to free(). Use weft__alloc/weft__free for the runtime's memory and avoid the
# libc functions that return malloc'ed memory.
#
# This file is also the script that runs step 2 (cmake -P cmake/static.cmake
# with -DWEFT_LOCALIZE_OBJ=...), so that no shell quoting is involved and the
# build works with any generator.

if(CMAKE_SCRIPT_MODE_FILE)
  # ------------------------------------------------------------ step 2 (script mode)
  foreach(v WEFT_NM WEFT_OBJCOPY WEFT_LOCALIZE_OBJ WEFT_KEEP_LIST)
    if(NOT DEFINED ${v})
      message(FATAL_ERROR "static.cmake: ${v} is not set")
    endif()
  endforeach()

  # The global defined symbols of an object, one name per list element.
  function(weft_global_defined obj outvar)
    execute_process(COMMAND ${WEFT_NM} -P -g --defined-only ${obj}
      OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE rc)
    if(NOT rc EQUAL 0)
      message(FATAL_ERROR "static.cmake: ${WEFT_NM} failed on ${obj}: ${err}")
    endif()
    string(REPLACE "\n" ";" lines "${out}")
    set(names "")
    foreach(line IN LISTS lines)
      # POSIX format: "name type value size"; undefined symbols are excluded above.
      if(line MATCHES "^([^ ]+) [A-Za-z] ")
        list(APPEND names "${CMAKE_MATCH_1}")
      endif()
    endforeach()
    set(${outvar} "${names}" PARENT_SCOPE)
  endfunction()

  weft_global_defined(${WEFT_LOCALIZE_OBJ} all)
  set(keep "")
  foreach(name IN LISTS all)
    if(name MATCHES "^weft_[A-Za-z0-9]")
      list(APPEND keep "${name}")
    endif()
  endforeach()
  if(NOT keep)
    message(FATAL_ERROR "static.cmake: ${WEFT_LOCALIZE_OBJ} defines no public weft_ symbol")
  endif()
  list(REMOVE_DUPLICATES keep)
  list(SORT keep)
  string(REPLACE ";" "\n" text "${keep}")
  file(WRITE ${WEFT_KEEP_LIST} "${text}\n")

  execute_process(COMMAND ${WEFT_OBJCOPY} --keep-global-symbols=${WEFT_KEEP_LIST} ${WEFT_LOCALIZE_OBJ}
    ERROR_VARIABLE err RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "static.cmake: ${WEFT_OBJCOPY} failed: ${err}")
  endif()

  # Check: the public API and nothing else is left global.
  weft_global_defined(${WEFT_LOCALIZE_OBJ} after)
  set(leaked "")
  foreach(name IN LISTS after)
    if(NOT name MATCHES "^weft_[A-Za-z0-9]")
      list(APPEND leaked "${name}")
    endif()
  endforeach()
  if(leaked)
    message(FATAL_ERROR "static.cmake: symbols still global in ${WEFT_LOCALIZE_OBJ}: ${leaked}")
  endif()
  list(LENGTH after n)
  message(STATUS "weft_all.o: ${n} public symbols kept global, the rest made local")
  return()
endif()

# ------------------------------------------------------------ the build rules

set(WEFT_STATIC_DIR ${PROJECT_BINARY_DIR}/weft_static)
set(WEFT_ALL_O ${WEFT_STATIC_DIR}/weft_all.o)

set(WEFT_STATIC_ARCHIVES "")
set(WEFT_STATIC_FOLDED liburing)
if(WEFT_JEMALLOC)
  list(APPEND WEFT_STATIC_ARCHIVES ${WEFT_JEMALLOC_PIC})
  set(WEFT_STATIC_FOLDED "jemalloc + liburing")
endif()
list(APPEND WEFT_STATIC_ARCHIVES ${WEFT_URING_STATIC})

# The partial linker: the linker itself, else the compiler driver.
if(CMAKE_LINKER)
  set(WEFT_PARTIAL_LINK ${CMAKE_LINKER} -r)
  set(WEFT_PL_GROUP --start-group ${WEFT_STATIC_ARCHIVES} --end-group)
else()
  set(WEFT_PARTIAL_LINK ${CMAKE_C_COMPILER} -r -nostdlib)
  set(WEFT_PL_GROUP -Wl,--start-group ${WEFT_STATIC_ARCHIVES} -Wl,--end-group)
endif()
foreach(tool NM OBJCOPY)
  if(NOT CMAKE_${tool})
    string(TOLOWER ${tool} prog)
    find_program(CMAKE_${tool} ${prog} REQUIRED)
  endif()
endforeach()

add_custom_command(OUTPUT ${WEFT_ALL_O}
  COMMAND ${CMAKE_COMMAND} -E make_directory ${WEFT_STATIC_DIR}
  COMMAND ${WEFT_PARTIAL_LINK} -o ${WEFT_ALL_O} $<TARGET_OBJECTS:weft_objects> ${WEFT_PL_GROUP}
  COMMAND ${CMAKE_COMMAND} -DWEFT_NM=${CMAKE_NM} -DWEFT_OBJCOPY=${CMAKE_OBJCOPY}
          -DWEFT_LOCALIZE_OBJ=${WEFT_ALL_O} -DWEFT_KEEP_LIST=${WEFT_STATIC_DIR}/weft_exports.txt
          -P ${CMAKE_CURRENT_LIST_FILE}
  DEPENDS weft_objects $<TARGET_OBJECTS:weft_objects> ${WEFT_STATIC_ARCHIVES} ${CMAKE_CURRENT_LIST_FILE}
  COMMENT "Partial link of weft and private ${WEFT_STATIC_FOLDED} into weft_all.o, localising all but weft_*"
  COMMAND_EXPAND_LISTS VERBATIM)
set_source_files_properties(${WEFT_ALL_O} PROPERTIES EXTERNAL_OBJECT TRUE GENERATED TRUE)

# A real STATIC library target (not an IMPORTED one), so that it can be
# installed and exported like the shared library: its only member is weft_all.o.
add_library(weft_static STATIC ${WEFT_ALL_O})
add_dependencies(weft_static weft_objects)
set_target_properties(weft_static PROPERTIES OUTPUT_NAME weft LINKER_LANGUAGE C EXPORT_NAME weft_static)
target_include_directories(weft_static PUBLIC
  $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include>
  $<BUILD_INTERFACE:${PROJECT_BINARY_DIR}/include>
  $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
# What the folded-in jemalloc and liburing still need from the system, and
# OpenSSL (net/tls.c; shared libssl/libcrypto, not folded in).
target_link_libraries(weft_static INTERFACE ${OPENSSL_LIBRARIES} Threads::Threads ${CMAKE_DL_LIBS} m)
if(WEFT_SAN_FLAGS)
  # A sanitized archive needs the sanitizer's runtime in the final link.
  target_link_options(weft_static INTERFACE ${WEFT_SAN_FLAGS})
endif()
add_library(weft::weft_static ALIAS weft_static)
