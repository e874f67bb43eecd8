# l4q-train as a user runs it: a short L4Q run from the quick-start config with command-line
# overrides; it must exit 0, write summary.json with a lower validation loss, and refuse to
# overwrite the run without --force, and refuse a bad L4Q_MALLOC before touching the output.
file(REMOVE_RECURSE ${OUT})
set(args --config ${SRC}/configs/stories260k-l4q-3bit.json --output ${OUT} --steps 8 --threads 1
    --set data.max_records=60 --set data.max_length=160 --set eval_every=0 --set log_every=4
    --set model=\"${SRC}/assets/stories260K/stories260K.gguf\"
    --set data.train=\"${SRC}/assets/alpaca/alpaca_en_demo.json\" --no-progress --quiet)
execute_process(COMMAND ${TRAIN} ${args} RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "l4q-train failed (${rc}): ${err}")
endif()
file(READ ${OUT}/summary.json summary)
string(JSON before GET "${summary}" val_loss_before)
string(JSON after GET "${summary}" val_loss_after)
string(JSON steps GET "${summary}" steps)
if(NOT steps EQUAL 8 OR NOT after LESS before)
  message(FATAL_ERROR "unexpected summary: ${summary}")
endif()
execute_process(COMMAND ${TRAIN} ${args} RESULT_VARIABLE rc ERROR_VARIABLE err)
if(rc EQUAL 0 OR NOT err MATCHES "holds a run already")
  message(FATAL_ERROR "a second run into the same directory should be refused (${rc}): ${err}")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} -E env L4Q_MALLOC=always ${TRAIN} ${args} --force
                RESULT_VARIABLE rc ERROR_VARIABLE err)
if(rc EQUAL 0 OR NOT err MATCHES "L4Q_MALLOC: expected keep or glibc, got 'always'"
   OR NOT EXISTS ${OUT}/summary.json)
  message(FATAL_ERROR "L4Q_MALLOC=always should be refused, the run left in place (${rc}): ${err}")
endif()
message(STATUS "l4q-train: 8 steps, val loss ${before} -> ${after}")
