# Fails unless README.md contains examples/00_readme.cpp verbatim, so the
# quick-start program in the README is the one CI builds and runs.
file(READ "${README}" readme)
file(READ "${EXAMPLE}" example)
string(FIND "${readme}" "${example}" pos)
if(pos EQUAL -1)
  message(FATAL_ERROR "README.md does not contain ${EXAMPLE} verbatim: update the quick start")
endif()
message(STATUS "README quick start matches ${EXAMPLE}")
