# l4q-eval as a user runs it, on the bundled stories260K: perplexity under both protocols
# (JSON on stdout and with --out), MMLU on a two-question data set written here, and a clear
# failure for a path that is no model.
#   -DEVAL=l4q-eval -DSRC=<repo> -DOUT=<scratch dir>
set(MODEL ${SRC}/assets/stories260K/stories260K.gguf)
set(TEXT ${SRC}/assets/stories260K/stories260K.greedy256.txt)
file(REMOVE_RECURSE ${OUT})
file(MAKE_DIRECTORY ${OUT})

function(run_eval outvar)
  execute_process(COMMAND ${EVAL} --model ${MODEL} --threads 1 ${ARGN}
    OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "l4q-eval ${ARGN} failed (${rc}): ${err}")
  endif()
  set(${outvar} "${out}" PARENT_SCOPE)
endfunction()

# Sliding window: the text is llama2.c's greedy output of this model, so its perplexity is low.
run_eval(js perplexity --text ${TEXT} --ctx 64 --stride 32)
string(JSON kind GET "${js}" model_kind)
string(JSON ppl GET "${js}" result perplexity)
string(JSON total GET "${js}" result tokens_total)
string(JSON scored GET "${js}" result tokens_scored)
if(NOT kind STREQUAL "float")
  message(FATAL_ERROR "model_kind: expected float, got ${kind}")
endif()
math(EXPR expect_scored "${total} - 1")
if(NOT scored EQUAL expect_scored)
  message(FATAL_ERROR "sliding window with stride < ctx must score every token but BOS: ${scored} of ${total}")
endif()
if(ppl LESS 1.0 OR ppl GREATER 3.0)
  message(FATAL_ERROR "perplexity of the model's own greedy text: expected in [1, 3], got ${ppl}")
endif()
message(STATUS "sliding window: perplexity ${ppl} over ${scored} tokens")

# llama.cpp protocol, result in a file: floor(total / 64) chunks, 31 targets each.
run_eval(ignored --out ${OUT}/ppl.json perplexity --text ${TEXT} --ctx 64 --llama-cpp)
file(READ ${OUT}/ppl.json js)
string(JSON scored GET "${js}" result tokens_scored)
string(JSON windows GET "${js}" result windows)
math(EXPR chunks "${total} / 64")
math(EXPR expect_scored "${chunks} * 31")
if(NOT windows EQUAL chunks OR NOT scored EQUAL expect_scored)
  message(FATAL_ERROR "llama.cpp protocol: expected ${chunks} chunks and ${expect_scored} tokens, got ${windows} and ${scored}")
endif()
message(STATUS "llama.cpp protocol: ${windows} chunks, ${scored} tokens")

# MMLU layout: dev/ and test/ folders, quoted CSV fields.
file(WRITE ${OUT}/mmlu/data/dev/tiny_dev.csv "\"Once upon a time, there was a\",girl,\"dog, big\",cat,sun,A\n")
file(WRITE ${OUT}/mmlu/data/test/tiny_test.csv "Lily liked to,play,eat,run,sing,A\nThe sun was,hot,cold,red,big,A\n")
run_eval(js mmlu --data ${OUT}/mmlu --shots 1)
string(JSON n GET "${js}" result questions)
string(JSON subject GET "${js}" result subjects 0 subject)
string(JSON acc GET "${js}" result micro_accuracy)
if(NOT n EQUAL 2 OR NOT subject STREQUAL "tiny")
  message(FATAL_ERROR "mmlu: expected 2 questions of subject tiny, got ${n} of ${subject}: ${js}")
endif()
message(STATUS "mmlu: ${n} questions, accuracy ${acc}")

# Not a model: a non-zero exit and a message naming the path.
file(MAKE_DIRECTORY ${OUT}/not-a-model)
execute_process(COMMAND ${EVAL} --model ${OUT}/not-a-model perplexity --text ${TEXT}
  OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE rc)
if(rc EQUAL 0 OR NOT err MATCHES "not-a-model.*expected an HF directory")
  message(FATAL_ERROR "a directory that is no model: expected an error naming it, got rc ${rc}: ${err}")
endif()
message(STATUS "l4q-eval CLI checks passed")
