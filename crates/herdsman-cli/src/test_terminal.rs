//! A terminal emulator for tests (`vt100`), whose window can be resized as an
//! operator's can, to check what the console leaves on the screen.

use std::sync::{Arc, Mutex};

/// A terminal emulator whose window can be resized, as the operator's can.
#[derive(Clone)]
pub(crate) struct Window(Arc<Mutex<vt100::Parser>>);

impl std::fmt::Debug for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Window")
    }
}

impl Window {
    pub(crate) fn new(rows: u16, cols: u16) -> Window {
        Window(Arc::new(Mutex::new(vt100::Parser::new(rows, cols, 0))))
    }

    fn with<T>(&self, f: impl FnOnce(&mut vt100::Parser) -> T) -> T {
        let mut parser = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut parser)
    }

    pub(crate) fn resize(&self, cols: u16) {
        self.with(|p| {
            let (rows, _) = p.screen().size();
            p.screen_mut().set_size(rows, cols);
        });
    }

    pub(crate) fn rows(&self) -> Vec<String> {
        self.with(|p| {
            let (_, cols) = p.screen().size();
            p.screen()
                .rows(0, cols)
                .map(|r| r.trim_end().to_string())
                .collect()
        })
    }

    fn send(&self, s: &str) -> std::io::Result<()> {
        self.with(|p| p.process(s.as_bytes()));
        Ok(())
    }
}

impl indicatif::TermLike for Window {
    fn width(&self) -> u16 {
        self.with(|p| p.screen().size().1)
    }
    fn height(&self) -> u16 {
        self.with(|p| p.screen().size().0)
    }
    fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        self.send(&format!("\x1b[{n}A"))
    }
    fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        self.send(&format!("\x1b[{n}B"))
    }
    fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        self.send(&format!("\x1b[{n}C"))
    }
    fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        self.send(&format!("\x1b[{n}D"))
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.send(s)?;
        self.send("\r\n")
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.send(s)
    }
    fn clear_line(&self) -> std::io::Result<()> {
        self.send("\r\x1b[2K")
    }
    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
}
