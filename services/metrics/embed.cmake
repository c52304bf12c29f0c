# cmake -DIN=<file> -DOUT=<file.c> -DSYMBOL=<name> -P embed.cmake
# Writes OUT defining `const char SYMBOL[]` (the bytes of IN as a string literal, so a
# NUL follows them) and `const size_t SYMBOL_len` (the bytes of IN): the binary carries
# the file.
file(READ "${IN}" hex HEX)
string(LENGTH "${hex}" n)
math(EXPR len "${n} / 2")
# 16 bytes a line, each as \xNN, each line a quoted literal (adjacent literals join).
string(REGEX REPLACE "(................................)" "\\1\n" lines "${hex}")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "\\\\x\\1" lines "${lines}")
string(REGEX REPLACE "([^\n]+)" "    \"\\1\"" lines "${lines}")
file(WRITE "${OUT}.tmp"
  "/* Generated from ${IN} by embed.cmake; do not edit. */\n"
  "#include <stddef.h>\n"
  "const char ${SYMBOL}[] =\n${lines}\n    \"\";\n"
  "const size_t ${SYMBOL}_len = ${len};\n")
file(RENAME "${OUT}.tmp" "${OUT}")
