#pragma once
// vkoptim: deep-learning optimizer update rules as Vulkan compute shaders.
#include "vkoptim/context.hpp"
#include "vkoptim/error.hpp"
#include "vkoptim/optimizer.hpp"
#include "vkoptim/schedule.hpp"
#include "vkoptim/shard.hpp"
#include "vkoptim/sparse.hpp"
#include "vkoptim/tensor.hpp"
