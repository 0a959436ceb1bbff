# The schedule tests (test_schedules.cpp) and their probe shader: tests/shaders/schedule_probe.comp
# includes shaders/schedule.glsl and is compiled, checked and embedded like the library's shaders
# (cmake/EmbedShaders.cmake), into schedule_probe.inc in the build tree.
set(_probe_dir ${CMAKE_CURRENT_BINARY_DIR}/shaders)
file(MAKE_DIRECTORY ${_probe_dir})
set(_probe_spv ${_probe_dir}/schedule_probe.spv)
set(_probe_inc ${_probe_dir}/schedule_probe.inc)
add_custom_command(
  OUTPUT ${_probe_spv}
  COMMAND ${GLSLANG_VALIDATOR} --quiet --target-env vulkan1.2 -I${PROJECT_SOURCE_DIR}/shaders
          --depfile ${_probe_spv}.d -o ${_probe_spv} ${CMAKE_CURRENT_SOURCE_DIR}/shaders/schedule_probe.comp
  COMMAND ${SPIRV_VAL} --target-env vulkan1.2 ${_probe_spv}
  DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/shaders/schedule_probe.comp ${PROJECT_SOURCE_DIR}/shaders/schedule.glsl
  DEPFILE ${_probe_spv}.d
  COMMENT "GLSL schedule_probe.comp -> SPIR-V"
  VERBATIM)
add_custom_command(
  OUTPUT ${_probe_inc}
  COMMAND ${CMAKE_COMMAND} -DINPUT=${_probe_spv} -DOUTPUT=${_probe_inc} -P ${PROJECT_SOURCE_DIR}/cmake/spv_to_inc.cmake
  DEPENDS ${_probe_spv} ${PROJECT_SOURCE_DIR}/cmake/spv_to_inc.cmake
  VERBATIM)
set_source_files_properties(${_probe_inc} PROPERTIES HEADER_FILE_ONLY ON)
set_source_files_properties(test_schedules.cpp PROPERTIES OBJECT_DEPENDS ${_probe_inc})
target_sources(vkoptim_tests PRIVATE test_schedules.cpp ${_probe_inc})
target_include_directories(vkoptim_tests PRIVATE ${_probe_dir})
