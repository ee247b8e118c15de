// Forked children for tests of what crosses processes (locks, fork(), resource limits) and of
// what could hang: a child that does not finish in time is killed, so a hang fails the test
// instead of stopping it.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <thread>

// Runs `body` in a forked child; its return value is the child's exit status (100: it threw).
// The child never returns into GoogleTest.
inline pid_t spawn(const std::function<int()>& body) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    int status = 100;
    try {
      status = body();
    } catch (...) {
      status = 101;
    }
    ::_exit(status);
  }
  return pid;
}

// The child's exit status (128 + the signal that ended it), -1 when it did not finish within
// `limit` (it is then killed), -2 when there is no such child.
inline int wait_bounded(pid_t pid, std::chrono::milliseconds limit) {
  if (pid < 0) return -2;
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    int status = 0;
    const pid_t done = ::waitpid(pid, &status, WNOHANG);
    if (done == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (done < 0) return -2;
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

inline int exit_status_in_child(const std::function<int()>& body, std::chrono::seconds limit = std::chrono::seconds(30)) {
  return wait_bounded(spawn(body), limit);
}
