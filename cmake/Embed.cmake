# krait_embed_text_files(<out.cpp> <symbol> <files...>)
#
# Writes a C++ source defining `krait::embedded::<symbol>`, a span of
# {name, contents} pairs, one per file, so data files (offset tables) ship
# inside the one executable. Runs at build time; re-runs when a file changes.
function(krait_embed_text_files out symbol)
  set(files ${ARGN})
  add_custom_command(
    OUTPUT "${out}"
    COMMAND ${CMAKE_COMMAND} -DOUT=${out} -DSYMBOL=${symbol} "-DFILES=${files}"
            -P ${PROJECT_SOURCE_DIR}/cmake/EmbedScript.cmake
    DEPENDS ${files} ${PROJECT_SOURCE_DIR}/cmake/EmbedScript.cmake
    COMMENT "embedding ${symbol}"
    VERBATIM)
endfunction()
