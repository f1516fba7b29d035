# `cmake --install` lays out the program, the public header, the library (static, or shared with
# -DBUILD_SHARED_LIBS=ON), a CMake package (find_package(sa2va) -> sa2va::sa2va) and a pkg-config
# file (sa2va.pc).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

# The installed program finds a shared libsa2va next to it, wherever the prefix is.
set_target_properties(sa2va_cli PROPERTIES INSTALL_RPATH "$ORIGIN/../${CMAKE_INSTALL_LIBDIR}")
install(TARGETS sa2va_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(TARGETS sa2va EXPORT sa2vaTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(FILES include/sa2va/sa2va.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/sa2va)
install(FILES data/qwen2-sa2va-tokenizer.json DESTINATION ${CMAKE_INSTALL_DATADIR}/sa2va)

set(SA2VA_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/sa2va)
install(EXPORT sa2vaTargets NAMESPACE sa2va:: DESTINATION ${SA2VA_CMAKE_DIR})
configure_package_config_file(cmake/sa2vaConfig.cmake.in ${CMAKE_BINARY_DIR}/sa2vaConfig.cmake
                              INSTALL_DESTINATION ${SA2VA_CMAKE_DIR})
write_basic_package_version_file(${CMAKE_BINARY_DIR}/sa2vaConfigVersion.cmake COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_BINARY_DIR}/sa2vaConfig.cmake ${CMAKE_BINARY_DIR}/sa2vaConfigVersion.cmake
        DESTINATION ${SA2VA_CMAKE_DIR})

# A static libsa2va needs its dependencies on the consumer's link line: there they are public
# requirements; a shared one has them inside and lists them as private.
set(SA2VA_PC_DEPENDENCIES "openblas libpng libjpeg sentencepiece libavformat libavcodec libswscale libavutil")
if(BUILD_SHARED_LIBS)
  set(SA2VA_PC_REQUIRES "")
  set(SA2VA_PC_REQUIRES_PRIVATE "${SA2VA_PC_DEPENDENCIES}")
else()
  set(SA2VA_PC_REQUIRES "${SA2VA_PC_DEPENDENCIES}")
  set(SA2VA_PC_REQUIRES_PRIVATE "")
endif()
# A static libsa2va of a CUDA build needs the static CUDA runtime on its consumers' link line too.
set(SA2VA_PC_CUDA_LIBS "")
if(SA2VA_WITH_CUDA AND NOT BUILD_SHARED_LIBS)
  set(SA2VA_PC_CUDA_LIBS " -L${CUDAToolkit_LIBRARY_DIR} -lcudart_static -ldl -lrt")
endif()
# Relocatable: the prefix is found from where the .pc file lies (cmake --install --prefix anywhere).
file(RELATIVE_PATH SA2VA_PC_PREFIX_FROM_PCFILE "${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_LIBDIR}/pkgconfig"
     "${CMAKE_INSTALL_PREFIX}")
configure_file(cmake/sa2va.pc.in ${CMAKE_BINARY_DIR}/sa2va.pc @ONLY)
install(FILES ${CMAKE_BINARY_DIR}/sa2va.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
