# Writes the push-constant block of one shader build as C++ initialisers, from glslang's
# reflection of every block member (used or not):
#   {"<module>", "<member>", <offset>, 0x<type>},
# Arguments: GLSLANG, SOURCE, MODULE, OUTPUT, INCLUDE_DIR (generated includes), DEFINES (a ;-list
# of -D options).
execute_process(
  COMMAND ${GLSLANG} -V -q --reflect-all-block-variables --target-env vulkan1.2 ${DEFINES} -I${INCLUDE_DIR} ${SOURCE}
          -o /dev/null
  OUTPUT_VARIABLE reflection
  RESULT_VARIABLE result)
if(NOT result EQUAL 0)
  message(FATAL_ERROR "glslangValidator failed on ${SOURCE}:\n${reflection}")
endif()
string(REGEX MATCH "Uniform reflection:\n[^\n]*(\n[^\n]+)*" uniforms "${reflection}")
string(REPLACE "\n" ";" lines "${uniforms}")
set(entries "")
foreach(line ${lines})
  # Members of the push-constant block (its type is named Push in every shader), e.g.
  # "Push.s.beta2: offset 36, type 1406, size 1, ..."; the member's last name is kept.
  if(line MATCHES "^Push\\.([A-Za-z0-9_.]+): offset ([0-9]+), type ([0-9a-f]+),")
    set(member ${CMAKE_MATCH_1})
    set(offset ${CMAKE_MATCH_2})
    set(type ${CMAKE_MATCH_3})
    string(REGEX REPLACE ".*\\." "" member "${member}")
    string(APPEND entries "{\"${MODULE}\", \"${member}\", ${offset}, 0x${type}},\n")
  endif()
endforeach()
file(WRITE ${OUTPUT} "${entries}")
