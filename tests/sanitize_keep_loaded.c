/* Preloaded by scripts/test --sanitize: keeps the Vulkan driver and the validation layer loaded
 * until the process exits, so LeakSanitizer can name their frames when it reports at exit and
 * tests/lsan_suppressions.txt can match them (the Vulkan loader unloads both when the last
 * instance is destroyed). RTLD_LOCAL: no symbol of theirs interposes the loader's. */
#include <dlfcn.h>

__attribute__((constructor)) static void keep_loaded(void) {
  static const char* const libraries[] = {"libVkLayer_khronos_validation.so", "libvulkan_lvp.so"};
  for (unsigned i = 0; i < sizeof libraries / sizeof libraries[0]; ++i)
    dlopen(libraries[i], RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
}
