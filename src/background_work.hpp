// Work a runtime starts on its own threads and nobody waits for at once: compiling JIT images
// whole into the persistent cache after prepare_all, so that the next process loads one module
// per image. Each piece belongs to an owner (a Module's state), which waits for its own pieces
// before it goes away; the process waits for whatever is left when it exits, before the driver's
// own exit handlers run, so no thread is inside the driver while it is torn down.
#pragma once

#include <functional>

namespace kiln::background {

// Runs `work` on a new thread at a lower scheduling priority than the application's threads;
// false if no thread could be started (the work is not done).
[[nodiscard]] bool start(const void* owner, std::function<void()> work);

// Returns once every piece of `owner`'s work has finished.
void wait(const void* owner);

}  // namespace kiln::background
