# switchboard_add_plugin(): builds one Switchboard plugin library the way the
# host needs it. Shared by this source tree and the installed SDK
# (find_package(Switchboard) includes this file), so both build plugins with
# the same flags. Needs the target Switchboard::plugin_api (the ABI header and
# Boost.DLL's headers) to exist where the function is called.
#
#   switchboard_add_plugin(<target>
#     KIND <routing|auth|presence|offline>
#     VERSION <semantic version>          # what sbctl and the ledger show
#     [BUILD_ID <text>]                   # default: "<VERSION>"
#     [OUTPUT_NAME <name>]                # default: <target>; the file is lib<name>.so
#     SOURCES <file>...
#     [LIBRARIES <target or library>...]) # linked privately
#
# The flags, and why (docs/architecture.md, "Unloading"):
#   -fvisibility=hidden -fvisibility-inlines-hidden  nothing but the descriptor is visible
#   -fno-gnu-unique   no STB_GNU_UNIQUE symbols, which would keep glibc from ever
#                     unmapping an old version
#   -Wl,--no-undefined -Wl,-z,defs  a missing symbol fails the link, not the load
#   a version script exporting only switchboard_plugin_descriptor
# The code sees SWITCHBOARD_PLUGIN_VERSION and SWITCHBOARD_PLUGIN_BUILD_ID as
# string literals (SWITCHBOARD_PLUGIN_CLASS in switchboard/plugin_sdk.h uses them).

include_guard(GLOBAL)

set(SWITCHBOARD_PLUGIN_COMPILE_OPTIONS -fvisibility=hidden -fvisibility-inlines-hidden
    -fno-gnu-unique CACHE INTERNAL "Compile options of every Switchboard plugin")
set(SWITCHBOARD_PLUGIN_LINK_OPTIONS -Wl,--no-undefined -Wl,-z,defs
    CACHE INTERNAL "Link options of every Switchboard plugin")
set(SWITCHBOARD_PLUGIN_EXPORTS_MAP ${CMAKE_CURRENT_LIST_DIR}/plugin_exports.map
    CACHE INTERNAL "Version script of Switchboard plugins: only the descriptor is exported")

function(switchboard_add_plugin target)
  cmake_parse_arguments(PARSE_ARGV 1 ARG "" "KIND;VERSION;BUILD_ID;OUTPUT_NAME"
                        "SOURCES;LIBRARIES")
  set(kinds routing auth presence offline)
  if(NOT ARG_KIND IN_LIST kinds)
    message(FATAL_ERROR "switchboard_add_plugin(${target}): KIND must be one of ${kinds}, "
                        "got '${ARG_KIND}'")
  endif()
  if(NOT ARG_VERSION)
    message(FATAL_ERROR "switchboard_add_plugin(${target}): VERSION is required")
  endif()
  if(NOT ARG_SOURCES)
    message(FATAL_ERROR "switchboard_add_plugin(${target}): SOURCES is required")
  endif()
  if(NOT ARG_BUILD_ID)
    set(ARG_BUILD_ID "${ARG_VERSION}")
  endif()
  if(NOT ARG_OUTPUT_NAME)
    set(ARG_OUTPUT_NAME ${target})
  endif()
  if(NOT TARGET Switchboard::plugin_api)
    message(FATAL_ERROR "switchboard_add_plugin: no target Switchboard::plugin_api "
                        "(call find_package(Switchboard) first)")
  endif()

  add_library(${target} MODULE ${ARG_SOURCES})
  target_link_libraries(${target} PRIVATE Switchboard::plugin_api ${ARG_LIBRARIES})
  target_compile_features(${target} PRIVATE cxx_std_20)
  target_compile_options(${target} PRIVATE ${SWITCHBOARD_PLUGIN_COMPILE_OPTIONS})
  target_compile_definitions(${target} PRIVATE
    SWITCHBOARD_PLUGIN_VERSION="${ARG_VERSION}"
    SWITCHBOARD_PLUGIN_BUILD_ID="${ARG_BUILD_ID}")
  target_link_options(${target} PRIVATE ${SWITCHBOARD_PLUGIN_LINK_OPTIONS}
                      -Wl,--version-script=${SWITCHBOARD_PLUGIN_EXPORTS_MAP})
  set_target_properties(${target} PROPERTIES
    PREFIX lib
    OUTPUT_NAME ${ARG_OUTPUT_NAME}
    POSITION_INDEPENDENT_CODE ON
    LINK_DEPENDS ${SWITCHBOARD_PLUGIN_EXPORTS_MAP})
endfunction()
