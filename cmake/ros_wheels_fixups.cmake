# Fix-ups needed only when building against the ROS 2 wheels from PyPI (ros-python-wheels).
#
# The message packages' exported CMake targets carry two include directories of the container
# the wheels were built in (/opt/python/cp311-cp311/...). CMake refuses imported targets whose
# include directories do not exist, so they are mapped to this interpreter's directories.
find_package(Python3 REQUIRED COMPONENTS Interpreter Development.Module)
execute_process(
  COMMAND "${Python3_EXECUTABLE}" -c "import numpy; print(numpy.get_include())"
  OUTPUT_VARIABLE _gausstr_numpy_include
  OUTPUT_STRIP_TRAILING_WHITESPACE
  COMMAND_ERROR_IS_FATAL ANY)

function(_gausstr_fix_include_dirs target)
  get_target_property(_dirs ${target} INTERFACE_INCLUDE_DIRECTORIES)
  if(NOT _dirs)
    return()
  endif()
  set(_fixed "")
  foreach(_dir IN LISTS _dirs)
    if(_dir MATCHES "^/opt/python/[^/]+/include/python")
      list(APPEND _fixed "${Python3_INCLUDE_DIRS}")
    elseif(_dir MATCHES "^/opt/python/.*/numpy/(_core|core)/include")
      list(APPEND _fixed "${_gausstr_numpy_include}")
    else()
      list(APPEND _fixed "${_dir}")
    endif()
  endforeach()
  set_target_properties(${target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_fixed}")
endfunction()

foreach(_pkg std_msgs geometry_msgs builtin_interfaces)
  find_package(${_pkg} REQUIRED)
  foreach(_suffix
      __rosidl_generator_py __rosidl_generator_c __rosidl_typesupport_c
      __rosidl_typesupport_introspection_c __rosidl_typesupport_fastrtps_c)
    if(TARGET ${_pkg}::${_pkg}${_suffix})
      _gausstr_fix_include_dirs(${_pkg}::${_pkg}${_suffix})
    endif()
  endforeach()
endforeach()
