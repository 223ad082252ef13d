# Builds a consumer of the staged install and runs it on the model.
#   MODE=cmake:      the examples project, with find_package(wv) and wv::wv
#   MODE=pkg-config: examples/chat.cpp compiled with `pkg-config --cflags --libs wv`
# Variables: STAGE (the install prefix), SRC (bindings/cpp), WORK (scratch folder), MODEL, CXX;
# for MODE=cmake optionally WV_DIR (find the package there instead: a build folder) and LIBDIR
# (the folder the consumer's libwv must come from; default STAGE).
cmake_minimum_required(VERSION 3.21)
unset(ENV{WV_LIBRARY_PATH})  # the staged library, not an override
if(NOT LIBDIR)
  set(LIBDIR "${STAGE}")
endif()
if(WV_DIR)
  set(FIND_ARG "-Dwv_DIR=${WV_DIR}")
else()
  set(FIND_ARG "-DCMAKE_PREFIX_PATH=${STAGE}")
endif()
file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}")

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  message(STATUS "$ ${ARGN}\n${out}${err}")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc})")
  endif()
  set(OUT "${out}" PARENT_SCOPE)
endfunction()

if(MODE STREQUAL "cmake")
  run("${CMAKE_COMMAND}" -S "${SRC}/examples" -B "${WORK}" "${FIND_ARG}"
      "-DCMAKE_CXX_COMPILER=${CXX}")
  run("${CMAKE_COMMAND}" --build "${WORK}")
  run("${WORK}/wv_frame_loop" "${MODEL}")
  if(NOT OUT MATCHES "the heavens, and the heavens")
    message(FATAL_ERROR "unexpected output")
  endif()
  # The executable must run with the package's library (its build RPATH points there).
  run(ldd "${WORK}/wv_frame_loop")
  string(FIND "${OUT}" "${LIBDIR}" _at)
  if(_at EQUAL -1)
    message(FATAL_ERROR "wv_frame_loop does not use the libwv in ${LIBDIR}")
  endif()
elseif(MODE STREQUAL "pkg-config")
  find_program(PKG_CONFIG NAMES pkg-config pkgconf REQUIRED)
  file(GLOB_RECURSE _pc "${STAGE}/*/wv.pc")
  list(GET _pc 0 _pc)
  get_filename_component(_pcdir "${_pc}" DIRECTORY)
  set(ENV{PKG_CONFIG_PATH} "${_pcdir}")
  run("${PKG_CONFIG}" --modversion wv)
  run("${PKG_CONFIG}" --cflags wv)
  separate_arguments(_cflags UNIX_COMMAND "${OUT}")
  run("${PKG_CONFIG}" --libs wv)
  separate_arguments(_libs UNIX_COMMAND "${OUT}")
  run("${PKG_CONFIG}" --variable=libdir wv)
  string(STRIP "${OUT}" _libdir)
  run("${CXX}" -std=c++17 ${_cflags} "${SRC}/examples/chat.cpp" -o "${WORK}/chat" ${_libs}
      "-Wl,-rpath,${_libdir}")
  run("${WORK}/chat" "${MODEL}" "Who made the heaven?")
  if(NOT OUT MATCHES "tokens, [0-9]+ in the conversation")
    message(FATAL_ERROR "unexpected output")
  endif()
else()
  message(FATAL_ERROR "MODE must be cmake or pkg-config")
endif()
