-- minikong.process: nginx worker 0 starts and supervises plugin servers (start_cmd), as Kong.
--
-- Kong spawns "exec <start_cmd>" through /bin/sh with ngx.pipe.spawn from a 0-delay timer in
-- worker 0 of the http subsystem, so the server's parent is worker 0 and it runs with the
-- worker's scrubbed environment; after any exit it spawns again, no sooner than 1 s after the
-- previous start; in exit_worker it sends SIGTERM without waiting (kong-protocol.md 1.4).
-- Debian's nginx lacks ngx.pipe (it needs OpenResty's patched nginx), so this does the same
-- with LuaJIT's FFI and posix_spawn. The worker's own SIGCHLD handler reaps the child (nginx
-- logs "unknown process <pid> exited ..."), so an exit is noticed with kill(pid, 0).
local ffi = require "ffi"

local ngx = ngx
local C = ffi.C
local NOTICE, ERR = ngx.NOTICE, ngx.ERR

ffi.cdef [[
typedef int pid_t;
typedef struct {
  int allocated;
  int used;
  void *actions;
  int pad[16];
} minikong_spawn_file_actions_t;
int posix_spawn_file_actions_init(minikong_spawn_file_actions_t *fa);
int posix_spawn_file_actions_destroy(minikong_spawn_file_actions_t *fa);
int posix_spawn_file_actions_addclosefrom_np(minikong_spawn_file_actions_t *fa, int from);
int posix_spawn(pid_t *pid, const char *path, const minikong_spawn_file_actions_t *fa,
                const void *attr, char *const argv[], char *const envp[]);
int kill(pid_t pid, int sig);
extern char **environ;
]]

local SIGTERM = 15
local RESPAWN_DELAY = 1   -- Kong: no sooner than 1 s after the previous start
local CHECK_EVERY = 0.2   -- how often worker 0 looks for an exited server

local _M = {}

local running = {}        -- server name -> pid (worker 0 only)

-- Spawns /bin/sh -c "exec <cmd>" with the worker's environment; stdin, stdout and stderr are
-- the worker's (nginx's stderr), every other descriptor of the worker is closed.
local function spawn(cmd)
  local argv = ffi.new("char *[4]")
  local strings = { "/bin/sh", "-c", "exec " .. cmd }
  local keep = {}
  for i, s in ipairs(strings) do
    keep[i] = ffi.new("char[?]", #s + 1, s)
    argv[i - 1] = keep[i]
  end
  argv[3] = nil
  local fa = ffi.new("minikong_spawn_file_actions_t")
  C.posix_spawn_file_actions_init(fa)
  C.posix_spawn_file_actions_addclosefrom_np(fa, 3)
  local pid = ffi.new("pid_t[1]")
  local rc = C.posix_spawn(pid, "/bin/sh", fa, nil, argv, C.environ)
  C.posix_spawn_file_actions_destroy(fa)
  if rc ~= 0 then
    return nil, "posix_spawn failed with error " .. rc
  end
  return pid[0]
end

local function alive(pid)
  return C.kill(pid, 0) == 0
end

local supervise

local function start(premature, server)
  if premature or ngx.worker.exiting() then
    return
  end
  ngx.log(NOTICE, "[pluginserver] starting pluginserver process for ", server.name)
  local pid, err = spawn(server.start_cmd)
  if not pid then
    ngx.log(ERR, "[pluginserver] ", server.name, ": ", err)
    ngx.timer.at(RESPAWN_DELAY, start, server)
    return
  end
  running[server.name] = pid
  ngx.log(NOTICE, "[pluginserver] started, pid ", pid)
  ngx.timer.at(CHECK_EVERY, supervise, server, pid, ngx.now())
end

function supervise(premature, server, pid, started_at)
  if premature or ngx.worker.exiting() then
    return
  end
  if alive(pid) then
    ngx.timer.at(CHECK_EVERY, supervise, server, pid, started_at)
    return
  end
  running[server.name] = nil
  ngx.log(NOTICE, "external pluginserver '", server.name, "' terminated (pid ", pid, ")")
  ngx.update_time()
  local wait = started_at + RESPAWN_DELAY - ngx.now()
  ngx.timer.at(wait > 0 and wait or 0, start, server)
end

--- init_worker: worker 0 starts every server that has a start_cmd.
function _M.init_worker(servers)
  if ngx.worker.id() ~= 0 then
    return
  end
  for _, server in ipairs(servers) do
    if server.start_cmd then
      ngx.timer.at(0, start, server)
    end
  end
end

--- exit_worker: SIGTERM to the servers worker 0 started (Kong does not wait for them).
function _M.exit_worker()
  for name, pid in pairs(running) do
    C.kill(pid, SIGTERM)
    ngx.log(NOTICE, "[pluginserver] successfully stopped pluginserver '", name, "', pid ", pid)
  end
end

return _M
