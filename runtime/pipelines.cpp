// Pipeline registry: one VkPipeline per PipelineKey (shader build, specialization constants), created through the
// Context's VkPipelineCache and counted, so repeated steps create nothing.
#include <string>
#include <vector>

#include "context_state.hpp"
#include "embedded_shaders.hpp"

namespace vkoptim::detail {

bool ContextState::has_subgroup_build(const std::string& rule) const {
  return !embedded_shader(rule + "_desc_w4_sg").empty();
}

VkPipeline ContextState::pipeline(const PipelineKey& key) {
  std::lock_guard lock(pipeline_mutex);
  if (auto it = pipelines.find(key); it != pipelines.end()) return it->second;
  const std::string shader = key.module_name();
  const auto& spec_constants = key.spec_constants;

  const auto code = embedded_shader(shader);
  if (code.empty()) throw Error(Status::not_found, "no embedded shader named " + shader);
  VkShaderModuleCreateInfo smci{VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO};
  smci.codeSize = code.size();
  smci.pCode = reinterpret_cast<const uint32_t*>(code.data());  // embedded with alignas(4)
  VkShaderModule module = VK_NULL_HANDLE;
  check_vk(vkd.vkCreateShaderModule(device, &smci, nullptr, &module), "vkCreateShaderModule");

  // Constant ids are the positions in `spec_constants`: 0 workgroup size, 1 items, 2 careful,
  // 3.. the rule's.
  std::vector<VkSpecializationMapEntry> entries(spec_constants.size());
  for (uint32_t i = 0; i < entries.size(); ++i) entries[i] = {i, uint32_t(i * sizeof(uint32_t)), sizeof(uint32_t)};
  VkSpecializationInfo spec{uint32_t(entries.size()), entries.data(), spec_constants.size() * sizeof(uint32_t),
                            spec_constants.data()};
  VkComputePipelineCreateInfo cpci{VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO};
  cpci.stage = {VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO};
  cpci.stage.stage = VK_SHADER_STAGE_COMPUTE_BIT;
  cpci.stage.module = module;
  cpci.stage.pName = "main";
  cpci.stage.pSpecializationInfo = &spec;
  // The subgroup build tiles blocks with whole subgroups of subgroup_size lanes: require both.
  VkPipelineShaderStageRequiredSubgroupSizeCreateInfo required_size{
      VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_REQUIRED_SUBGROUP_SIZE_CREATE_INFO};
  required_size.requiredSubgroupSize = caps.subgroup_size;
  if (key.subgroup_blocks) {
    cpci.stage.flags |= VK_PIPELINE_SHADER_STAGE_CREATE_REQUIRE_FULL_SUBGROUPS_BIT;
    cpci.stage.pNext = &required_size;
  }
  cpci.layout = pipeline_layout(key.device_address);
  VkPipeline pipeline = VK_NULL_HANDLE;
  const VkResult r = vkd.vkCreateComputePipelines(device, pipeline_cache, 1, &cpci, nullptr, &pipeline);
  vkd.vkDestroyShaderModule(device, module, nullptr);
  check_vk(r, "vkCreateComputePipelines");
  count(&ContextStats::pipelines_created);
  pipelines.emplace(key, pipeline);
  return pipeline;
}

}  // namespace vkoptim::detail
