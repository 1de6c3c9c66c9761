# Runs at install time (cmake --install, and cpack for the .deb), where the
# install prefix is known: installs the files whose place depends on it.
#   prefix /usr (the .deb):  config in /etc/switchboard, Python module in
#                            /usr/lib/python3/dist-packages (Debian's own place)
#   any other prefix P:      config in P/etc/switchboard, Python module in
#                            P/lib/python3.X/dist-packages (for P=/usr/local,
#                            where Debian's python3 looks for local modules)
#   always:                  the systemd unit in P/lib/systemd/system, with
#                            ExecStart and --config pointing at the above
# Expects _sb_source (packaging/), _sb_binary (a scratch dir), _sb_python_module
# (the built module) and _sb_python_version ("3.11") to be set by the caller.

if(CMAKE_INSTALL_PREFIX STREQUAL "/usr")
  set(_sb_sysconf "/etc/switchboard")
  set(_sb_python_dir "/usr/lib/python3/dist-packages")
else()
  set(_sb_sysconf "${CMAKE_INSTALL_PREFIX}/etc/switchboard")
  set(_sb_python_dir "${CMAKE_INSTALL_PREFIX}/lib/python${_sb_python_version}/dist-packages")
endif()

set(BINDIR "${CMAKE_INSTALL_PREFIX}/bin")
set(CONFIGFILE "${_sb_sysconf}/switchboard.toml")
set(DOCDIR "${CMAKE_INSTALL_PREFIX}/share/doc/switchboard")
# Rendered into a scratch dir of its own per destination: two installs of one
# build (a test's and cpack's) may run at the same time.
string(MD5 _sb_destination "$ENV{DESTDIR}${CMAKE_INSTALL_PREFIX}")
set(_sb_rendered "${_sb_binary}/rendered-${_sb_destination}")
configure_file("${_sb_source}/switchboard.service.in" "${_sb_rendered}/switchboard.service" @ONLY)

file(INSTALL "${_sb_rendered}/switchboard.service"
     DESTINATION "${CMAKE_INSTALL_PREFIX}/lib/systemd/system")
file(INSTALL "${_sb_source}/switchboard.toml" DESTINATION "${_sb_sysconf}")
file(INSTALL "${_sb_python_module}" "${_sb_source}/../scripting/switchboard.pyi"
     DESTINATION "${_sb_python_dir}")
