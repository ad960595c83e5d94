# Writes OUT = '#define LPVIT_GIT_COMMIT "<short hash>[-dirty.<diff hash>]"' at every build, touching
# the file only when the text changes, so reports name the commit a binary was really built from (a
# value taken at configure time goes stale with every commit). A build with uncommitted changes adds
# the first 8 hex digits of the SHA-256 of `git diff HEAD`: the caches key on this text, so two
# different sets of local changes never share statistics or step checkpoints. Run by CMakeLists.txt
# (cmake -P).
execute_process(COMMAND git rev-parse --short=12 HEAD WORKING_DIRECTORY ${SRC}
  OUTPUT_VARIABLE commit OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
execute_process(COMMAND git status --porcelain --untracked-files=no WORKING_DIRECTORY ${SRC}
  OUTPUT_VARIABLE dirty OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
if(NOT commit)
  set(commit "unknown")
elseif(dirty)
  execute_process(COMMAND git diff HEAD --no-color --no-ext-diff WORKING_DIRECTORY ${SRC}
    OUTPUT_VARIABLE diff ERROR_QUIET)
  string(SHA256 diff_sha "${diff}")
  string(SUBSTRING "${diff_sha}" 0 8 diff_sha)
  set(commit "${commit}-dirty.${diff_sha}")
endif()
set(text "#define LPVIT_GIT_COMMIT \"${commit}\"\n")
if(EXISTS ${OUT})
  file(READ ${OUT} old)
endif()
if(NOT "${old}" STREQUAL "${text}")
  file(WRITE ${OUT} "${text}")
endif()
