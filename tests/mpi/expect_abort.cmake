# cmake -DMPIEXEC=<mpiexec;flags;...> -DPROGRAM=<exe> -DMODE=<mode> -DEXPECT=<regex>
#       -P expect_abort.cmake
# Runs the job and passes when it ends within 60 s with a non-zero exit code and its
# stderr matches EXPECT, and no rank says it finished normally.
execute_process(COMMAND ${MPIEXEC} ${PROGRAM} ${MODE} TIMEOUT 60
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
message("exit: ${rc}\nstdout:\n${out}\nstderr:\n${err}")
if(rc MATCHES "timeout|Timeout")
  message(FATAL_ERROR "the job hung (killed after 60 s)")
endif()
if(rc EQUAL 0)
  message(FATAL_ERROR "the job exited with 0; expected a non-zero exit code")
endif()
if(NOT err MATCHES "${EXPECT}")
  message(FATAL_ERROR "stderr does not match '${EXPECT}'")
endif()
if(out MATCHES "finished normally")
  message(FATAL_ERROR "a rank finished normally")
endif()
