# Runs one compile-fail case (cmake -P). Variables:
#   COMPILER   the C++ compiler
#   SOURCE     the case's .cpp
#   INCLUDES   include directories, separated by "|"
#   MODE       "fail": compile with -DBACKPROP_SHOULD_FAIL, expect an error whose
#              text matches every "// expect: <regex>" line of SOURCE, the first of
#              them on the first error line (our message comes first, not a cascade);
#              "ok": compile without the macro and expect success (the twin).
foreach(_var COMPILER SOURCE MODE)
  if(NOT DEFINED ${_var} OR "${${_var}}" STREQUAL "")
    message(FATAL_ERROR "check_compile.cmake: ${_var} is not set")
  endif()
endforeach()

set(_args -std=c++20 -fsyntax-only -fdiagnostics-color=never)
string(REPLACE "|" ";" _includes "${INCLUDES}")
foreach(_dir IN LISTS _includes)
  if(NOT _dir STREQUAL "")
    list(APPEND _args "-I${_dir}")
  endif()
endforeach()
if(MODE STREQUAL "fail")
  list(APPEND _args -DBACKPROP_SHOULD_FAIL)
elseif(NOT MODE STREQUAL "ok")
  message(FATAL_ERROR "check_compile.cmake: MODE must be fail or ok, got '${MODE}'")
endif()

# Plain ASCII diagnostics (g++ otherwise uses typographic quotes under UTF-8 locales).
set(ENV{LC_ALL} C)
execute_process(
  COMMAND "${COMPILER}" ${_args} "${SOURCE}"
  RESULT_VARIABLE _rc
  OUTPUT_VARIABLE _out
  ERROR_VARIABLE _out)

get_filename_component(_case "${SOURCE}" NAME_WE)
if(MODE STREQUAL "ok")
  if(NOT _rc EQUAL 0)
    message("${_out}")
    message(FATAL_ERROR "compile_ok.${_case}: the must-compile twin does not compile "
                        "(exit ${_rc}); the compile-fail test would prove nothing")
  endif()
  message(STATUS "compile_ok.${_case}: compiles")
  return()
endif()

if(_rc EQUAL 0)
  message(FATAL_ERROR "compile_fail.${_case}: compiled with -DBACKPROP_SHOULD_FAIL "
                      "but must not")
endif()

file(STRINGS "${SOURCE}" _expect_lines REGEX "^// expect: ")
if(NOT _expect_lines)
  message(FATAL_ERROR "compile_fail.${_case}: ${SOURCE} has no '// expect: <regex>' line")
endif()
string(REGEX MATCH "[^\n]*error[^\n]*" _first_error "${_out}")
set(_failed FALSE)
set(_first TRUE)
foreach(_line IN LISTS _expect_lines)
  string(REGEX REPLACE "^// expect: " "" _regex "${_line}")
  if(NOT _out MATCHES "${_regex}")
    message(SEND_ERROR "compile_fail.${_case}: the diagnostic does not match '${_regex}'")
    set(_failed TRUE)
  elseif(_first AND NOT _first_error MATCHES "${_regex}")
    message(SEND_ERROR "compile_fail.${_case}: '${_regex}' is not in the first error:\n"
                       "  ${_first_error}")
    set(_failed TRUE)
  endif()
  set(_first FALSE)
endforeach()
if(_failed)
  message("---- compiler output ----\n${_out}")
  message(FATAL_ERROR "compile_fail.${_case}: wrong diagnostic")
endif()
message(STATUS "compile_fail.${_case}: fails with the expected diagnostic")
