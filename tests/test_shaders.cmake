# The tests' own shaders (tests/shaders/<name>.comp: the schedule probe, which includes
# shaders/schedule.glsl, and a host engine's gradient shader), compiled, checked and embedded like
# the library's shaders (cmake/EmbedShaders.cmake) into <name>.inc in the build tree, each for the
# test file that includes it.
set(_probe_dir ${CMAKE_CURRENT_BINARY_DIR}/shaders)
file(MAKE_DIRECTORY ${_probe_dir})
function(vkoptim_test_shader name test_source)
  set(spv ${_probe_dir}/${name}.spv)
  set(inc ${_probe_dir}/${name}.inc)
  add_custom_command(
    OUTPUT ${spv}
    COMMAND ${GLSLANG_VALIDATOR} --quiet --target-env vulkan1.2 -I${PROJECT_SOURCE_DIR}/shaders
            --depfile ${spv}.d -o ${spv} ${CMAKE_CURRENT_SOURCE_DIR}/shaders/${name}.comp
    COMMAND ${SPIRV_VAL} --target-env vulkan1.2 ${spv}
    DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/shaders/${name}.comp
    DEPFILE ${spv}.d
    COMMENT "GLSL ${name}.comp -> SPIR-V"
    VERBATIM)
  add_custom_command(
    OUTPUT ${inc}
    COMMAND ${CMAKE_COMMAND} -DINPUT=${spv} -DOUTPUT=${inc} -P ${PROJECT_SOURCE_DIR}/cmake/spv_to_inc.cmake
    DEPENDS ${spv} ${PROJECT_SOURCE_DIR}/cmake/spv_to_inc.cmake
    VERBATIM)
  set_source_files_properties(${inc} PROPERTIES HEADER_FILE_ONLY ON)
  set_property(SOURCE ${test_source} APPEND PROPERTY OBJECT_DEPENDS ${inc})
  target_sources(vkoptim_tests PRIVATE ${test_source} ${inc})
endfunction()
vkoptim_test_shader(schedule_probe test_schedules.cpp)
vkoptim_test_shader(lsq_grad test_replay.cpp)
target_include_directories(vkoptim_tests PRIVATE ${_probe_dir})
