# MPI test helpers (FindMPI must have run):
#   backprop_mpiexec_prefix(<var> <procs>) sets <var> to the launch command, e.g.
#     mpiexec -n 2 --oversubscribe --allow-run-as-root
#   backprop_add_mpi_test(NAME <name> PROCS <n> COMMAND <target> [args...] [TIMEOUT <s>])
#     registers that command running <target> with ctest, labelled "mpi".
# With Open MPI the command adds --oversubscribe (a test may start more ranks than the
# machine has cores) and, when configured as root, --allow-run-as-root.
get_property(_bp_have_flags GLOBAL PROPERTY BACKPROP_MPIEXEC_FLAGS SET)
if(NOT _bp_have_flags)
  set(_bp_flags ${MPIEXEC_PREFLAGS})
  execute_process(COMMAND "${MPIEXEC_EXECUTABLE}" --version OUTPUT_VARIABLE _bp_version
                  ERROR_QUIET)
  if(_bp_version MATCHES "Open MPI|OpenRTE")
    list(APPEND _bp_flags --oversubscribe)
    execute_process(COMMAND id -u OUTPUT_VARIABLE _bp_uid OUTPUT_STRIP_TRAILING_WHITESPACE
                    ERROR_QUIET)
    if(_bp_uid STREQUAL "0")
      list(APPEND _bp_flags --allow-run-as-root)
    endif()
  endif()
  set_property(GLOBAL PROPERTY BACKPROP_MPIEXEC_FLAGS "${_bp_flags}")
endif()

function(backprop_mpiexec_prefix var procs)
  get_property(_flags GLOBAL PROPERTY BACKPROP_MPIEXEC_FLAGS)
  set(${var} ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${procs} ${_flags} PARENT_SCOPE)
endfunction()

function(backprop_add_mpi_test)
  cmake_parse_arguments(PARSE_ARGV 0 arg "" "NAME;PROCS;TIMEOUT" "COMMAND")
  if(NOT arg_TIMEOUT)
    set(arg_TIMEOUT 120)
  endif()
  list(POP_FRONT arg_COMMAND _exe)
  backprop_mpiexec_prefix(_launch ${arg_PROCS})
  add_test(NAME ${arg_NAME}
           COMMAND ${_launch} $<TARGET_FILE:${_exe}> ${MPIEXEC_POSTFLAGS} ${arg_COMMAND})
  # PROCESSORS keeps `ctest -j 2` from running two 2-rank jobs on 2 cores at once (Open
  # MPI ranks busy-wait).
  set_tests_properties(${arg_NAME} PROPERTIES LABELS mpi PROCESSORS ${arg_PROCS}
                                              TIMEOUT ${arg_TIMEOUT})
endfunction()
