# Install the l4q build tree into a scratch prefix, then build and run the consumer project.
file(REMOVE_RECURSE ${L4Q_SCRATCH})
execute_process(COMMAND ${CMAKE_COMMAND} --install ${L4Q_BINARY_DIR} --prefix ${L4Q_SCRATCH}/prefix
  RESULT_VARIABLE rc OUTPUT_QUIET)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "cmake --install failed (${rc})")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} -S ${L4Q_CONSUMER_SOURCE} -B ${L4Q_SCRATCH}/build
    -G ${L4Q_GENERATOR} -DCMAKE_BUILD_TYPE=Release
    "-DCMAKE_PREFIX_PATH=${L4Q_SCRATCH}/prefix;${L4Q_TORCH_DIR}"
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "configuring the consumer failed (${rc})")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${L4Q_SCRATCH}/build RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "building the consumer failed (${rc})")
endif()
execute_process(COMMAND ${L4Q_SCRATCH}/build/consumer RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the consumer failed (${rc})")
endif()
