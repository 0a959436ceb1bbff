// Bindings and push constants shared by the engine's shaders: one descriptor set for every
// pipeline, one push-constant block layout (each shader reads the fields it needs).
layout(std430, binding = 0) buffer Model { float model[]; };     // parameters, then gradients
layout(std430, binding = 1) buffer Acts { float acts[]; };       // activations of one batch
layout(std430, binding = 2) readonly buffer Data { uint data[]; };  // images and labels, bytes packed 4 per word
layout(std430, binding = 3) readonly buffer Batch { uint batch[]; };  // [0]: rows in use, then sample indices
layout(std430, binding = 4) buffer Stats { float stats[]; };      // host-visible results of a submission
